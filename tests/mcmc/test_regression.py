"""Behaviour is unchanged across refactors: HMC cards with every sampler key written out reproduce the
`configs` checksums recorded on main at 46e124e (before the issue-15 redesign), with one torch thread."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

CARDS = Path(__file__).resolve().parents[1] / "regression_cards"
RECORDED = {
    "phi4_hmc": "e9d4e027dc66850e1772c39a0344eb4eadfc084510a1a4ce7977413a2fb711f8",
    "u1_hmc": "06d2087b7be08640d666226b815c04bd225469a88341025e9af11b676e7ae118",
}


@pytest.mark.parametrize("card", sorted(RECORDED))
def test_configs_checksum_is_unchanged(card, tmp_path):
    out = tmp_path / card
    cmd = [sys.executable, "-m", "mcmc.cli", "sample", str(CARDS / f"{card}.yaml"), "--set", f"out={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=Path(__file__).resolve().parents[2])
    with h5py.File(out / f"{card}.r0.h5", "r") as h5:
        digest = hashlib.sha256(h5["configs"][...].tobytes()).hexdigest()
    assert digest == RECORDED[card]

"""``latflow sample`` with a flow: two fresh runs with one seed store the same ensemble bit for bit
whatever ``rows`` the proposal buffer uses (``proposal_batch`` 1, 2, 8, or the default time budget),
for the U(1) flow, whose forward map is batch-invariant on the CPU (mcmc/kernels/independence.py)."""

import h5py
import numpy as np
import yaml

from mcmc.cli import main

CARD = {
    "theory": {"name": "u1", "shape": [4, 4], "beta": 2.0},
    "sampler": {"kind": "flow"},
    "flow": {"n_layers": 2, "hidden": [4]},
    "train": {"steps": 5, "batch_size": 16},
    "sample": {"n_configs": 40, "n_therm": 5, "n_chains": 3, "progress": False},
    "seed": 11,
}
DATASETS = ("configs", "logp", "logq", "accepted", "proposal_logw")


def _sample(tmp_path, name, **sample):
    path = tmp_path / name / "card.yaml"
    path.parent.mkdir()
    card = {**CARD, "sample": {**CARD["sample"], **sample}, "out": str(tmp_path / name / "out")}
    path.write_text(yaml.safe_dump(card))
    assert main(["sample", str(path), "--quiet"]) == 0
    with h5py.File(tmp_path / name / "out" / "out.r0.h5") as f:
        return {k: f[k][()] for k in DATASETS}


def test_ensemble_does_not_depend_on_rows(tmp_path):
    runs = {f"rows{b}": _sample(tmp_path, f"rows{b}", proposal_batch=b, refill_seconds=None)
            for b in (1, 2, 8)}
    runs["timed"] = _sample(tmp_path, "timed")  # default refill_seconds: rows from a timing
    ref = runs["rows1"]
    assert 0 < ref["accepted"].mean() < 1
    for key, run in runs.items():
        for name in DATASETS:
            assert np.array_equal(run[name], ref[name]), (key, name)

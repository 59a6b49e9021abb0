"""Ensembles under ``mpiexec -n 2`` (the pip MPI of the ``mpi`` extra): one replica per rank, the merged
summary on rank 0, SIGTERM + ``--resume`` bit-identical, and a rank failing alone ends the whole job."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from lattice import exact_u1
from mcmc.io.verify import verify_file

BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _mpi_missing() -> str | None:
    if MPIEXEC is None:
        return "no mpiexec next to the interpreter or on PATH (install the extra: pip install -e '.[mpi]')"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    return None


pytestmark = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))

# two ranks share two cores; Open MPI refuses to start as root (containers, some cluster images) unless
# told it may, and MPICH ignores these variables
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
CARD = {
    "theory": {"name": "u1", "shape": [8, 8], "beta": 2.0},
    "sampler": {"kind": "hmc"},
    "hmc": {"tau": 1.0, "n_steps": 8, "integrator": "omelyan"},
    "sample": {"n_configs": 400, "n_therm": 50, "n_chains": 2, "checkpoint_every": 25, "progress": False},
    "seed": 21,
    "device": "cpu",
}
DATASETS = ("configs", "traj", "crc32", "accepted", "logp", "dH", "obs/plaquette", "obs/Q")


def mpi_latflow(*args, n=2):
    return [MPIEXEC, "-n", str(n), str(BIN / "latflow"), *map(str, args)]


def write_card(directory, **changes):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "card.yaml"
    path.write_text(yaml.safe_dump({**CARD, "out": str(directory / "out"), **changes}))
    return path


def replicas(directory):
    return [directory / "out" / f"out.r{r}.h5" for r in range(2)]


@pytest.fixture(scope="module")
def u1_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("u1_mpi")
    cmd = mpi_latflow("run", write_card(directory), "--json", "--quiet", "--no-plots")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr
    return directory, r.stdout


def test_two_ranks_give_two_replicas_and_the_exact_plaquette(u1_run):
    directory, stdout = u1_run
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert sum(line.startswith("{") for line in lines) == 1  # only rank 0 reports
    assert summary["n_replicas"] == 2
    assert summary["n_configs"] == 2 * CARD["sample"]["n_chains"] * CARD["sample"]["n_configs"]
    plaq = summary["observables"]["plaquette"]
    exact = exact_u1.plaquette(2.0, (8, 8))
    assert abs(plaq["mean"] - exact) < 4 * plaq["err"], (plaq, exact)
    seeds = set()
    for rank, path in enumerate(replicas(directory)):
        assert verify_file(path) == []
        with h5py.File(path) as f:
            assert f.attrs["replica"] == rank and f.attrs["n_replicas"] == 2
            assert f.attrs["ensemble_id"] == f"out|r{rank}" and json.loads(f.attrs["spawn_key"]) == [rank]
            seeds.add(f["configs"][0].tobytes())
    assert len(seeds) == 2  # the replicas are independent streams


def wait_for(paths, proc, timeout=120.0):
    t0 = time.monotonic()
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, f"finished before the checkpoints appeared: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.01)


def test_sigterm_under_mpi_then_resume_is_bit_identical(u1_run, tmp_path):
    reference, _ = u1_run
    card = write_card(tmp_path)
    proc = subprocess.Popen(
        mpi_latflow("sample", card, "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    wait_for([p.with_suffix(".ckpt") for p in replicas(tmp_path)], proc)
    proc.send_signal(signal.SIGTERM)  # mpiexec forwards it to every rank
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    for path in replicas(tmp_path):
        with h5py.File(path) as f:
            assert f.attrs["status"] == "running" and f["traj"].shape[0] < CARD["sample"]["n_configs"]
    r = subprocess.run(
        mpi_latflow("sample", card, "--quiet", "--resume"),
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    for ref, got in zip(replicas(reference), replicas(tmp_path), strict=True):
        with h5py.File(ref) as a, h5py.File(got) as b:
            for name in DATASETS:
                assert np.array_equal(a[name][()], b[name][()]), (got, name)
        assert verify_file(got) == []


def test_a_rank_failing_alone_ends_the_job(u1_run, tmp_path):
    """Rank 0's file exists (an earlier one-rank run), rank 1's does not: no rank may hang."""
    card = write_card(tmp_path, sample={**CARD["sample"], "n_configs": 5, "n_therm": 0})
    (tmp_path / "out").mkdir()
    shutil.copy(replicas(u1_run[0])[0], replicas(tmp_path)[0])
    r = subprocess.run(
        mpi_latflow("sample", card, "--quiet"), capture_output=True, text=True, timeout=120, env=ENV
    )
    assert r.returncode == 2
    assert "already holds an ensemble" in r.stderr and "Traceback" not in r.stderr


def test_measure_accepts_every_replica_file(u1_run):
    r = subprocess.run(
        [str(BIN / "latflow"), "measure", *map(str, replicas(u1_run[0])), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["n_replicas"] == 2 and summary["n_configs"] == 1600
    assert summary == {**json.loads(u1_run[1].strip().splitlines()[-1]), "timing": summary["timing"]}


def test_flow_training_is_shared_by_the_ranks(tmp_path):
    """``latflow sample`` of a flow card under MPI: one data-parallel training, one checkpoint written
    by rank 0 (with both ranks' generator states), the same model in both replicas."""
    flow_card = {
        "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
        "sampler": {"kind": "flow"},
        "flow": {"coupling": "affine", "n_layers": 2, "hidden": [4]},
        "train": {"steps": 12, "batch_size": 16, "checkpoint_every": 5},
        "sample": {"n_configs": 20, "n_therm": 2, "progress": False, "proposal_batch": 16},
        "seed": 4,
        "device": "cpu",
        "out": str(tmp_path / "out"),
    }
    card = tmp_path / "flow.yaml"
    card.write_text(yaml.safe_dump(flow_card))
    r = subprocess.run(
        mpi_latflow("sample", card, "--quiet"), capture_output=True, text=True, timeout=300, env=ENV
    )
    assert r.returncode == 0, r.stderr
    import torch

    saved = torch.load(tmp_path / "out" / "out.flow.pt", weights_only=True)
    assert saved["step"] == 12 and saved["n_ranks"] == 2 and len(saved["rank_generators"]) == 2
    assert saved["metrics"]["batch_size"][0] == 16  # the total batch, 8 per rank
    hashes = {torch.load(p.with_suffix(".ckpt"), weights_only=True)["model_hash"] for p in replicas(tmp_path)}
    assert len(hashes) == 1
    assert [verify_file(p) for p in replicas(tmp_path)] == [[], []]

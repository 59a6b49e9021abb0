"""``latflow verify`` on damaged files: each damage gives a clear one-line finding and exit status 1."""

import json
import shutil

import h5py
import numpy as np
import pytest

from mcmc.card import parse_card
from mcmc.cli import main
from mcmc.io.store import CHAIN_DATASETS
from mcmc.io.verify import verify_file
from mcmc.job import sample_replica
from mcmc.runtime import World
from mcmc.setup import job_plan

CARD = {
    "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "hmc"},
    "sample": {
        "n_configs": 40,
        "n_therm": 5,
        "n_chains": 2,
        "every": 2,
        "checkpoint_every": 16,
        "progress": False,
    },
    "seed": 5,
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Two replicas of one ensemble, made in-process exactly as ranks 0 and 1 of a 2-rank job make them."""
    directory = tmp_path_factory.mktemp("verify")
    card = parse_card({**CARD, "out": str(directory / "out")})
    for rank in (0, 1):
        sample_replica(job_plan(card), World(rank, 2), progress=False)
    return directory / "out"


@pytest.fixture
def copy(pristine, tmp_path):
    path = tmp_path / "out.r0.h5"
    shutil.copy(pristine / "out.r0.h5", path)
    return path


def verify(capsys, *paths):
    capsys.readouterr()
    code = main(["verify", *map(str, paths)])
    return code, capsys.readouterr().out


def test_sound_files_pass(pristine, capsys):
    code, out = verify(capsys, pristine / "out.r0.h5", pristine / "out.r1.h5")
    assert code == 0 and out.count("OK") == 2


def test_tampered_configuration_is_named_by_index(copy, capsys):
    with h5py.File(copy, "r+") as f:
        f["configs"][23, 0, 1, 1] *= -1.0
    code, out = verify(capsys, copy)
    assert code == 1 and "configuration 23 (chain 0): crc32 mismatch" in out
    assert sum("crc32" in line for line in out.splitlines()) == 1


def test_truncated_file(copy, capsys):
    data = copy.read_bytes()
    copy.write_bytes(data[: len(data) // 2])
    code, out = verify(capsys, copy)
    assert code == 1 and "truncated file" in out and len(out.strip().splitlines()) == 2


def test_wrong_format_version(copy, capsys):
    with h5py.File(copy, "r+") as f:
        f.attrs["format_version"] = 7
    code, out = verify(capsys, copy)
    assert code == 1 and "format_version 7 is not the supported 1" in out


def test_missing_format_version(copy, capsys):
    with h5py.File(copy, "r+") as f:
        del f.attrs["format_version"]
    code, out = verify(capsys, copy)
    assert code == 1 and "format_version missing" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.__setitem__(10, t[9]), "configuration 10: traj jumps 25 -> 25 (stride 2); duplicate"),
        (lambda t: t.__setitem__(slice(10, None), t[10:] + 2), "configuration 10: traj jumps 25 -> 29"),
        (
            lambda t: t.__setitem__(slice(None), t + 2),
            "configuration 0: traj is 9, the card's n_therm + every",
        ),
    ],
)
def test_traj_continuity(copy, capsys, change, message):
    with h5py.File(copy, "r+") as f:
        traj = f["traj"][()]
        change(traj)
        f["traj"][...] = traj
    code, out = verify(capsys, copy)
    assert code == 1 and message in out, out


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("seed", 6, "seed attribute 6 disagrees with the card's 5"),
        ("theory", json.dumps({"name": "phi4", "shape": [4, 4], "m2": -2.0, "lam": 1.0}), "theory attribute"),
        ("spawn_key", "[3]", "spawn_key [3] is not that of replica 0"),
        ("ensemble_id", "other|r0", "ensemble_id 'other|r0' is not the card's out|r0"),
        ("sampler", "flow", "sampler attribute 'flow' disagrees with the card's 'hmc'"),
        ("status", "running", "the run did not finish"),
    ],
)
def test_provenance_against_the_card(copy, capsys, attr, value, message):
    with h5py.File(copy, "r+") as f:
        f.attrs[attr] = value
    code, out = verify(capsys, copy)
    assert code == 1 and message in out, out


def test_rows_missing_from_one_dataset_and_short_runs(copy, capsys):
    with h5py.File(copy, "r+") as f:
        f["obs/mag2"].resize(30, axis=0)
    code, out = verify(capsys, copy)
    assert code == 1 and "dataset obs/mag2 has 30 rows, traj has 40" in out
    with h5py.File(copy, "r+") as f:
        for name in ("configs", "traj", "crc32", "row_crc32", *CHAIN_DATASETS):
            f[name].resize(30, axis=0)
        for name in f["obs"]:
            f["obs"][name].resize(30, axis=0)
    assert any("holds 30 configurations, the card asks for 40" in p for p in verify_file(copy))


def test_garbage_and_missing_files(tmp_path, capsys):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"definitely not HDF5")
    code, out = verify(capsys, garbage, tmp_path / "absent.h5")
    assert code == 1 and "not a readable HDF5 file" in out and "no such ensemble file" in out


def test_measure_merges_two_replica_files(pristine, capsys):
    capsys.readouterr()
    assert main(["measure", str(pristine / "out.r0.h5"), str(pristine / "out.r1.h5"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_replicas"] == 2 and summary["n_configs"] == 2 * 2 * 40
    values = [h5py.File(pristine / f"out.r{r}.h5")["obs/mag2"][()] for r in (0, 1)]
    assert not np.array_equal(*values)  # independent streams
    assert summary["observables"]["mag2"]["mean"] == pytest.approx(np.mean(values))


@pytest.mark.parametrize(
    "name",
    ["traj", "crc32", "accepted", "logp", "logq", "dH", "proposal_logw", "accept_prob",
     "obs/mag2", "obs/absmag", "obs/phi2", "obs/action"],
)
def test_every_tampered_dataset_is_named(copy, capsys, name):
    """Problem 4: a changed observable (or any other stored number) used to pass verify."""
    with h5py.File(copy, "r+") as f:
        row = f[name][17]
        if row.dtype == bool:
            f[name][17] = ~row
        else:
            f[name][17] = row + 1 if row.dtype.kind in "iu" else np.full_like(row, 0.5)
    code, out = verify(capsys, copy)
    assert code == 1 and f"dataset {name}: row(s) 17 differ from their checksums" in out, out


def test_edited_card_attribute_is_detected(copy, capsys):
    with h5py.File(copy, "r+") as f:
        f.attrs["card"] = f.attrs["card"].replace("n_hits: 3", "n_hits: 4")  # consistent with theory & seed
    code, out = verify(capsys, copy)
    assert code == 1 and "card or theory attribute altered after writing" in out, out


def test_provenance_comparison_is_nan_safe(copy, capsys):
    """A NaN coupling stored consistently (older files allowed one) is no card mismatch."""
    from mcmc.io.store import provenance_sha256

    with h5py.File(copy, "r+") as f:
        theory = json.loads(f.attrs["theory"])
        f.attrs["theory"] = json.dumps({**theory, "m2": float("nan")})
        f.attrs["card"] = f.attrs["card"].replace("m2: -1.0", "m2: .nan")
        f.attrs["provenance_sha256"] = provenance_sha256(f.attrs["card"], f.attrs["theory"])
    assert verify_file(copy) == []


def test_files_without_row_checksums_say_what_is_unchecked(copy, capsys):
    with h5py.File(copy, "r+") as f:
        del f["row_crc32"]
        del f.attrs["provenance_sha256"]
    code, out = verify(capsys, copy)
    assert code == 0 and "note: no row_crc32" in out and "note: no provenance_sha256" in out

"""``latflow measure``: each replica once (by its stored identity); unfinished files are warned about."""

import shutil

import h5py
import pytest
import yaml

from mcmc.cli import main

CARD = {
    "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "hmc"},
    "sample": {"n_configs": 40, "n_therm": 5, "n_chains": 2, "progress": False},
    "seed": 5,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    card = directory / "card.yaml"
    card.write_text(yaml.safe_dump({**CARD, "out": str(directory / "out")}))
    assert main(["sample", str(card), "--quiet"]) == 0
    return directory / "out" / "out.r0.h5"


@pytest.mark.parametrize("as_copy", [False, True])
def test_the_same_replica_twice_is_refused(ensemble, tmp_path, capsys, as_copy):
    """Problem 5: ``measure good.r0.h5 good.r0.h5`` shrank the errors by sqrt(2)."""
    other = ensemble
    if as_copy:  # another path, the same stored identity
        other = tmp_path / "renamed.r1.h5"
        shutil.copy(ensemble, other)
    capsys.readouterr()
    assert main(["measure", str(ensemble), str(other)]) == 2
    err = capsys.readouterr().err
    assert "the same replica as" in err and "ensemble_id 'out|r0'" in err and len(err.splitlines()) == 1


def test_an_unfinished_file_is_measured_with_a_warning(ensemble, tmp_path, capsys):
    running = tmp_path / "out.r0.h5"
    shutil.copy(ensemble, running)
    with h5py.File(running, "r+") as f:
        f.attrs["status"] = "running"
    capsys.readouterr()
    assert main(["measure", str(running)]) == 0
    err = capsys.readouterr().err
    assert "unfinished (status 'running'" in err and "40 stored configurations" in err
    capsys.readouterr()
    assert main(["measure", str(ensemble)]) == 0
    assert "unfinished" not in capsys.readouterr().err

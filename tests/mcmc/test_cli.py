"""The command line as a user meets it: the JSON contract, one-line errors, verify, resume."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mcmc.cli import main

CARD = {
    "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "hmc"},
    "sample": {"n_configs": 60, "n_therm": 10, "n_chains": 2, "checkpoint_every": 25, "progress": False},
    "seed": 3,
}


def write_card(tmp_path, **changes):
    card = {**CARD, "out": str(tmp_path / "out"), **changes}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def run_cli(*args):
    return main([*map(str, args)])


def test_run_json_summary_and_layout(tmp_path, capsys):
    assert run_cli("run", write_card(tmp_path), "--json", "--quiet", "--no-plots") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sampler"] == "hmc" and summary["ess"] is None
    assert summary["n_configs"] == 120 and summary["n_replicas"] == 1
    assert summary["theory"] == CARD["theory"]
    assert set(summary["observables"]) == {"mag2", "absmag", "phi2", "action"}
    for value in summary["observables"].values():
        assert set(value) == {"mean", "err", "tau_int", "tau_int_err"}
    with h5py.File(tmp_path / "out" / "out.r0.h5") as f:
        assert f["configs"].shape == (60, 2, 4, 4)
        assert f.attrs["ensemble_id"] == "out|r0" and f.attrs["status"] == "complete"
        assert list(f["traj"][:3]) == [11, 12, 13]
        assert np.all(np.isnan(f["logq"][()])) and np.all(np.isfinite(f["dH"][()]))
    assert run_cli("verify", tmp_path / "out" / "out.r0.h5") == 0


def test_set_override_and_measure(tmp_path, capsys):
    card = write_card(tmp_path)
    assert (
        run_cli("run", card, "--set", "sample.n_configs=30", "--set", "seed=9", "--quiet", "--no-plots") == 0
    )
    capsys.readouterr()
    assert run_cli("measure", tmp_path / "out" / "out.r0.h5", "--json") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_configs"] == 60


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"theory": {**CARD["theory"], "no_such_key": 1}}, "theory.no_such_key"),
        ({"theory": {**CARD["theory"], "shape": [4, -4]}}, "extents must be at least 2"),
        ({"sample": {"n_configs": "many"}}, "sample.n_configs"),
        ({"hmc": {"integrator": "rk4"}}, "hmc.integrator"),
    ],
)
def test_bad_cards_give_one_line_errors(tmp_path, capsys, change, message):
    assert run_cli("run", write_card(tmp_path, **change), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "out.r0.h5").exists()


def test_missing_card_and_ensemble_files(tmp_path, capsys):
    assert run_cli("run", tmp_path / "nope.yaml") == 2
    assert "card file not found" in capsys.readouterr().err
    assert run_cli("measure", tmp_path / "nope.h5") == 2
    assert "no such ensemble file" in capsys.readouterr().err


def test_existing_ensemble_needs_resume_or_overwrite(tmp_path, capsys):
    card = write_card(tmp_path)
    assert run_cli("sample", card, "--quiet") == 0
    assert run_cli("sample", card, "--quiet") == 2
    assert "--resume" in capsys.readouterr().err
    assert run_cli("sample", card, "--quiet", "--overwrite") == 0


def test_resuming_a_complete_ensemble_says_so(tmp_path, capsys):
    card = write_card(tmp_path)
    assert run_cli("sample", card, "--quiet") == 0
    assert "acceptance" in capsys.readouterr().out
    assert run_cli("sample", card, "--quiet", "--resume") == 0
    out = capsys.readouterr().out
    assert "complete, nothing to sample" in out and "nan" not in out


def test_verify_names_tampered_configuration(tmp_path, capsys):
    assert run_cli("sample", write_card(tmp_path), "--quiet") == 0
    path = tmp_path / "out" / "out.r0.h5"
    with h5py.File(path, "r+") as f:
        f["configs"][17, 1, 2, 3] += 1e-9
    capsys.readouterr()
    assert run_cli("verify", path) == 1
    assert "configuration 17 (chain 1): crc32 mismatch" in capsys.readouterr().out


def test_verify_rejects_wrong_format_and_garbage(tmp_path, capsys):
    assert run_cli("sample", write_card(tmp_path), "--quiet") == 0
    path = tmp_path / "out" / "out.r0.h5"
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    capsys.readouterr()
    assert run_cli("verify", path, garbage) == 1
    out = capsys.readouterr().out
    assert "format_version 99" in out and "not a readable HDF5 file" in out


def test_failed_run_leaves_no_complete_looking_file(tmp_path, monkeypatch, capsys):
    import mcmc.kernels.hmc

    calls = {"n": 0}
    original = mcmc.kernels.hmc.HMC.step

    def failing_step(self, state, generator):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("simulated crash")
        return original(self, state, generator)

    monkeypatch.setattr(mcmc.kernels.hmc.HMC, "step", failing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli("sample", write_card(tmp_path), "--quiet")
    path = tmp_path / "out" / "out.r0.h5"
    with h5py.File(path) as f:
        assert f.attrs["status"] == "running"
    capsys.readouterr()
    assert run_cli("verify", path) == 1
    assert "did not finish" in capsys.readouterr().out


def test_resume_after_stop_is_bit_identical(tmp_path, monkeypatch, stop_after):
    """A run stopped mid-way and resumed gives exactly the configurations of an uninterrupted run."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_cli("sample", write_card(tmp_path / "a"), "--quiet") == 0
    part = write_card(tmp_path / "b")
    stop_after(37)
    with pytest.raises(SystemExit):
        run_cli("sample", part, "--quiet")
    monkeypatch.undo()
    with h5py.File(tmp_path / "b" / "out" / "out.r0.h5") as f:
        assert f.attrs["status"] == "running" and 0 < f["traj"].shape[0] < 60
    assert run_cli("sample", part, "--quiet", "--resume") == 0
    with (
        h5py.File(tmp_path / "a" / "out" / "out.r0.h5") as a,
        h5py.File(tmp_path / "b" / "out" / "out.r0.h5") as b,
    ):
        for name in ("configs", "traj", "logp", "accepted", "obs/mag2"):
            assert np.array_equal(a[name][()], b[name][()]), name
        assert b.attrs["status"] == "complete"


def test_resume_with_changed_physics_is_refused(tmp_path, capsys):
    card = write_card(tmp_path)
    assert run_cli("sample", card, "--quiet") == 0
    changed = write_card(tmp_path, theory={**CARD["theory"], "m2": -2.0})
    assert run_cli("sample", changed, "--quiet", "--resume") == 2
    assert "resume refused" in capsys.readouterr().err


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    card = write_card(tmp_path, theory={**CARD["theory"], "no_such_key": 1})
    exe = Path(sys.executable).with_name("latflow")
    r = subprocess.run([str(exe), "run", str(card)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no_such_key" in r.stderr


def test_train_init_from_warm_starts_on_a_larger_lattice(tmp_path, capsys):
    """``train.init_from``: a U(1) flow trained at L = 4 starts the L = 8 training (the conditioners are
    convolutions); an architecture that does not fit is a one-line error."""
    import torch

    flow = {"n_layers": 8, "hidden": [4]}
    small = {"theory": {"name": "u1", "shape": [4, 4], "beta": 2.0}, "sampler": {"kind": "flow"},
             "flow": flow, "train": {"steps": 5, "batch_size": 8}, "out": str(tmp_path / "small"), "seed": 1}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    assert run_cli("train", tmp_path / "small.yaml", "--quiet") == 0
    source = tmp_path / "small" / "small.flow.pt"
    big = {**small, "theory": {"name": "u1", "shape": [8, 8], "beta": 2.0}, "out": str(tmp_path / "big"),
           "train": {"steps": 0, "init_from": str(source)}}
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(big))
    assert run_cli("train", tmp_path / "big.yaml", "--quiet") == 0
    a = torch.load(source, weights_only=True)["model"]
    b = torch.load(tmp_path / "big" / "big.flow.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    other = {**big, "flow": {"n_layers": 4, "hidden": [4]}, "out": str(tmp_path / "other")}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert run_cli("train", tmp_path / "other.yaml", "--quiet") == 2
    err = capsys.readouterr().err
    assert "init_from" in err and len(err.strip().splitlines()) == 1


def test_overwrite_replaces_a_flow_checkpoint_of_another_architecture(tmp_path, capsys):
    """A checkpoint left by older defaults is refused, and replaced by ``--overwrite`` (as ``make demo``
    does); a matching one is reused."""
    card = {"theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}, "sampler": {"kind": "flow"},
            "flow": {"n_layers": 2, "hidden": [4]}, "train": {"steps": 3, "batch_size": 8},
            "sample": {"n_configs": 20, "n_therm": 2, "n_chains": 2}, "out": str(tmp_path / "out"), "seed": 3}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    assert run_cli("run", path, "--quiet", "--no-plots") == 0
    card["flow"]["hidden"] = [6]
    path.write_text(yaml.safe_dump(card))
    capsys.readouterr()
    assert run_cli("run", path, "--quiet", "--no-plots", "--overwrite") == 0
    import torch

    saved = torch.load(tmp_path / "out" / "out.flow.pt", weights_only=True)
    assert saved["flow_config"]["hidden"] == [6]


def test_run_writes_accept_history_and_charge_plots(tmp_path):
    """``latflow run`` on 2D U(1) writes the observable figures, the accept/reject history and the Q
    history and histogram (with the exact distribution)."""
    card = {"theory": {"name": "u1", "shape": [4, 4], "beta": 1.0}, "sampler": {"kind": "hmc"},
            "sample": {"n_configs": 30, "n_therm": 5, "n_chains": 2}, "out": str(tmp_path / "out"), "seed": 5}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    assert run_cli("run", path, "--quiet") == 0
    plots = tmp_path / "out" / "plots"
    for name in ("plaquette.png", "Q.png", "accept_history.png", "Q_history.png", "Q_histogram.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def one_line(capsys, *args, code=2):
    capsys.readouterr()
    assert run_cli(*args) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "abc"])
def test_window_S_is_checked_when_parsed(tmp_path, capsys, value):
    """Problem 9: --S -1 used to fail only after sampling everything."""
    with pytest.raises(SystemExit) as exit_:
        run_cli("run", write_card(tmp_path), "--quiet", f"--S={value}")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "--S" in err, err
    assert not (tmp_path / "out").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    card = write_card(tmp_path)
    assert run_cli("sample", card, "--quiet") == 0
    before = (tmp_path / "out" / "out.r0.h5").read_bytes()
    err = one_line(capsys, "sample", card, "--quiet", "--resume", "--overwrite")
    assert "--resume and --overwrite exclude each other" in err
    assert (tmp_path / "out" / "out.r0.h5").read_bytes() == before


def test_a_run_that_cannot_fit_stops_before_allocating(tmp_path, capsys):
    """Problem 9: a 100000 x 100000 lattice tried to allocate 160 GB and left an empty directory."""
    card = write_card(tmp_path, theory={**CARD["theory"], "shape": [100000, 100000]})
    err = one_line(capsys, "run", card, "--quiet")
    assert "this run needs about 1280.0 GB" in err and "GB in all" in err
    assert not (tmp_path / "out").exists()


def test_unavailable_device_is_a_one_line_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    err = one_line(capsys, "run", write_card(tmp_path, device="cuda"), "--quiet")
    assert "device: cuda was requested but no CUDA device is available" in err
    assert not (tmp_path / "out").exists()


def test_binary_card_and_bad_yaml_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    assert "not a text file" in one_line(capsys, "run", tmp_path / "bin.yaml")
    (tmp_path / "dup.yaml").write_text(yaml.safe_dump(CARD) + "seed: 4\n")
    assert "duplicate key 'seed'" in one_line(capsys, "run", tmp_path / "dup.yaml")


def test_local_log_acceptance_matches_the_table(tmp_path, capsys):
    """Problem 10: the local sampler's log line said acceptance 1.000 while the table said 0.649."""
    card = write_card(tmp_path, sampler={"kind": "local"}, theory={**CARD["theory"], "m2": 1.0})
    capsys.readouterr()
    assert run_cli("run", card, "--json", "--no-plots") == 0
    out, err = capsys.readouterr()
    logged = float(err.rsplit("acceptance ", 1)[1].split()[0])
    table = json.loads(out.strip().splitlines()[-1])["acceptance"]
    assert logged < 0.99 and logged == pytest.approx(table, abs=1e-3)

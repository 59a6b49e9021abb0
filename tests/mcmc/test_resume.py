"""Kill-safe sampling with real processes: SIGTERM/SIGUSR1 checkpoint and stop, SIGKILL (even in the
middle of an append) leaves a readable file, and ``--resume`` continues bit-identically."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mcmc.cli import main
from mcmc.io.ensemble import read_ensemble
from mcmc.io.store import StoreError
from mcmc.io.verify import verify_file
from mcmc.runtime import stop_signals


def h5(directory):
    return directory / "out" / "out.r0.h5"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, killable):
    """The uninterrupted run every interrupted one must reproduce exactly."""
    directory = tmp_path_factory.mktemp("reference")
    r = killable.latflow("sample", killable.write(directory), "--quiet")
    assert r.returncode == 0, r.stderr
    return h5(directory)


def test_sigterm_checkpoints_and_resume_is_bit_identical(tmp_path, reference, killable):
    card = killable.write(tmp_path)
    proc = killable.start("sample", card, "--quiet")
    killable.wait_for(h5(tmp_path).with_suffix(".ckpt"), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted; checkpoint written" in err and "Traceback" not in err
    ckpt = torch.load(h5(tmp_path).with_suffix(".ckpt"), weights_only=True)
    with h5py.File(h5(tmp_path)) as f:  # a clean stop closes the file: any HDF5 reader opens it
        assert f.attrs["status"] == "running"
        assert 0 < f["traj"].shape[0] == ckpt["n_stored"] < killable.card["sample"]["n_configs"]
    assert any("did not finish" in p for p in verify_file(h5(tmp_path)))
    r = killable.latflow("sample", card, "--quiet", "--resume")
    assert r.returncode == 0, r.stderr
    killable.assert_same(reference, h5(tmp_path))
    assert verify_file(h5(tmp_path)) == []


KILL_MID_APPEND = """
import os, signal, sys
import h5py
from mcmc.cli import main
calls = {"n": 0}
setitem = h5py.Dataset.__setitem__
def dying_setitem(self, key, value):
    calls["n"] += 1
    if calls["n"] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return setitem(self, key, value)
h5py.Dataset.__setitem__ = dying_setitem
main(["sample", sys.argv[1], "--quiet"])
"""


def test_sigkill_in_the_middle_of_an_append(tmp_path, reference, killable):
    """SIGKILL after some datasets of the 4th block were grown and written, before its flush."""
    card = killable.write(tmp_path)
    n_columns = 10 + 4  # configs, crc32, accepted, logp, logq, dH, proposal_logw, accept_prob, 4 obs,
    # row_crc32, traj
    r = subprocess.run(
        [sys.executable, "-c", KILL_MID_APPEND, str(card), str(3 * n_columns + 5)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    ens = read_ensemble(h5(tmp_path))  # readable, though left flagged open by the killed writer
    assert len(ens.traj) >= 3 * killable.card["sample"]["checkpoint_every"]
    assert torch.load(h5(tmp_path).with_suffix(".ckpt"), weights_only=True)["n_stored"] == 120
    r = killable.latflow("sample", card, "--quiet", "--resume")
    assert r.returncode == 0, r.stderr
    killable.assert_same(reference, h5(tmp_path))
    r = killable.latflow("verify", h5(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout


def test_repeated_sigkill_at_random_times(tmp_path, reference, killable):
    """kill -9 twice at arbitrary moments of a real run: nothing is lost beyond the last checkpoint."""
    card = killable.write(tmp_path)
    rng = np.random.default_rng(5)
    ckpt = h5(tmp_path).with_suffix(".ckpt")
    for attempt in range(2):
        proc = killable.start("sample", card, "--quiet", *(["--resume"] if attempt else []))
        if attempt == 0:
            killable.wait_for(ckpt, proc)
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        stored = torch.load(ckpt, weights_only=True)["n_stored"]
        assert len(read_ensemble(h5(tmp_path)).traj) >= stored
    r = killable.latflow("sample", card, "--quiet", "--resume")
    assert r.returncode == 0, r.stderr
    killable.assert_same(reference, h5(tmp_path))
    assert verify_file(h5(tmp_path)) == []


def test_n_configs_may_grow_and_nothing_else_may_change(tmp_path, capsys, killable):
    small = {**killable.card["sample"], "n_configs": 60}
    assert main(["sample", str(killable.write(tmp_path, sample=small)), "--quiet"]) == 0
    grown = killable.write(tmp_path, sample={**small, "n_configs": 100})
    assert main(["sample", str(grown), "--quiet", "--resume"]) == 0
    direct = killable.write(tmp_path / "direct", sample={**small, "n_configs": 100})
    assert main(["sample", str(direct), "--quiet"]) == 0
    killable.assert_same(h5(tmp_path / "direct"), h5(tmp_path))
    capsys.readouterr()
    for change, message in [
        ({"sample": {**small, "n_configs": 50}}, "n_configs = 50 is below the 100"),
        ({"sample": {**small, "n_configs": 200, "n_chains": 3}}, "sample.n_chains was 2 and is now 3"),
        ({"sample": {**small, "n_configs": 200, "every": 2}}, "sample.every was 1 and is now 2"),
        ({"seed": 12}, "seed was 11 and is now 12"),
        ({"hmc": {"tau": 0.6, "n_steps": 4}}, "hmc.tau was 0.5 and is now 0.6"),
        ({"theory": {**killable.card["theory"], "shape": [6, 8]}},
         "theory.shape was [6, 6] and is now [6, 8]"),
    ]:
        assert main(["sample", str(killable.write(tmp_path, **change)), "--quiet", "--resume"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (change, err)


def test_stop_signals_turn_into_a_flag():
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        before = signal.getsignal(sig)
        with stop_signals() as caught:
            os.kill(os.getpid(), sig)
            time.sleep(0.01)
            assert caught == [sig]
        assert signal.getsignal(sig) == before


def test_reading_a_damaged_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "x.r0.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(StoreError, match="x.r0.h5"):
        read_ensemble(path)


def file_bytes(*paths):
    return [Path(p).read_bytes() if Path(p).exists() else None for p in paths]


def test_missing_checkpoint_never_replaces_the_ensemble(tmp_path, capsys, killable):
    """Problem 2: without its .ckpt, --resume (even with another seed and m2) leaves the file untouched."""
    card = killable.write(tmp_path, sample={**killable.card["sample"], "n_configs": 60})
    assert main(["sample", str(card), "--quiet"]) == 0
    h5(tmp_path).with_suffix(".ckpt").unlink()
    before = file_bytes(h5(tmp_path))
    changed = killable.write(tmp_path, seed=99, theory={**killable.card["theory"], "m2": -4.0})
    capsys.readouterr()
    for path in (card, changed):
        assert main(["sample", str(path), "--quiet", "--resume"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert "holds 60 configurations but its checkpoint out.r0.ckpt is missing" in err
        assert "--overwrite" in err and "verify" in err
    assert file_bytes(h5(tmp_path)) == before


def test_an_empty_file_without_checkpoint_is_restarted(tmp_path, killable):
    """A run killed before its first checkpoint stored nothing: --resume starts it afresh."""
    card = killable.write(tmp_path, sample={**killable.card["sample"], "n_configs": 60})
    assert main(["sample", str(card), "--quiet"]) == 0
    with h5py.File(h5(tmp_path), "r+") as f:
        extra = ("logq", "proposal_logw", "accept_prob", "row_crc32", "obs/absmag", "obs/phi2")
        for name in killable.datasets + extra:
            f[name].resize(0, axis=0)
    h5(tmp_path).with_suffix(".ckpt").unlink()
    assert main(["sample", str(card), "--quiet", "--resume"]) == 0
    assert len(read_ensemble(h5(tmp_path)).traj) == 60


@pytest.mark.parametrize("damage", [b"", b"garbage" * 10, None])
def test_corrupt_checkpoint_is_a_one_line_error_naming_it(tmp_path, capsys, damage, killable):
    card = killable.write(tmp_path, sample={**killable.card["sample"], "n_configs": 60})
    assert main(["sample", str(card), "--quiet"]) == 0
    ckpt = h5(tmp_path).with_suffix(".ckpt")
    ckpt.write_bytes(ckpt.read_bytes()[:200] if damage is None else damage)  # None: truncated
    before = file_bytes(h5(tmp_path), ckpt)
    capsys.readouterr()
    grown = killable.write(tmp_path, sample={**killable.card["sample"], "n_configs": 80})
    assert main(["sample", str(grown), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{ckpt}: not a readable latflow checkpoint" in err, err
    assert file_bytes(h5(tmp_path), ckpt) == before


def test_costs_and_log_survive_sigkill(tmp_path, reference, killable):
    """Problems 6 and 10: after kill -9 the checkpoint holds the cumulative wall and CPU seconds of each
    phase and the log holds a line per checkpoint; the resumed file's totals include the killed session."""
    card = killable.write(tmp_path)
    ckpt = h5(tmp_path).with_suffix(".ckpt")
    proc = killable.start("sample", card, "--quiet")
    killable.wait_for(ckpt, proc)
    while torch.load(ckpt, weights_only=True)["n_stored"] < 200 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    killed = torch.load(ckpt, weights_only=True)["timing"]
    assert killed["therm_s"] > 0 and killed["sample_s"] > 0 and killed["sample_cpu_s"] > 0
    log_lines = (tmp_path / "out" / "out.r0.log").read_text().splitlines()
    assert any("configurations stored" in line for line in log_lines), log_lines
    r = killable.latflow("sample", card, "--quiet", "--resume")
    assert r.returncode == 0, r.stderr
    with h5py.File(h5(tmp_path)) as f:
        assert f.attrs["therm_s"] == pytest.approx(killed["therm_s"])  # thermalised in the killed session
        assert f.attrs["sample_s"] > killed["sample_s"]
        assert f.attrs["sample_cpu_s"] > killed["sample_cpu_s"]
    killable.assert_same(reference, h5(tmp_path))


def test_an_ensemble_from_before_a_new_card_key_and_state_field_resumes_bit_identically(
    tmp_path, killable
):
    """An HMC ensemble written before ``hmc.compile`` and the cached force ``grad`` existed: its stored
    card lacks the key, its checkpoint the field. It resumes (the key at its old value, the force
    recomputed from x) and continues exactly as an uninterrupted run."""
    import yaml

    small = {**killable.card["sample"], "n_configs": 60}
    assert main(["sample", str(killable.write(tmp_path, sample=small)), "--quiet"]) == 0
    with h5py.File(h5(tmp_path), "r+") as f:
        card = yaml.safe_load(f.attrs["card"])
        assert card["hmc"].pop("compile") is False
        f.attrs["card"] = yaml.safe_dump(card)
    ckpt = h5(tmp_path).with_suffix(".ckpt")
    payload = torch.load(ckpt, weights_only=False)
    del payload["state"]["grad"]
    torch.save(payload, ckpt)
    grown = killable.write(tmp_path, sample={**small, "n_configs": 100})
    assert main(["sample", str(grown), "--quiet", "--resume"]) == 0
    direct = killable.write(tmp_path / "direct", sample={**small, "n_configs": 100})
    assert main(["sample", str(direct), "--quiet"]) == 0
    killable.assert_same(h5(tmp_path / "direct"), h5(tmp_path))


def test_a_checkpoint_hashed_with_the_added_key_resumes_and_another_hash_is_refused(
    tmp_path, capsys, killable
):
    """Ensembles written while ``hmc.compile`` was still hashed carry the physics hash of the card with
    ``compile: false``; that hash (``Card.legacy_hashes``) is the same chain and resumes, any other is
    refused before the file is touched."""
    from mcmc.card import load_card

    small = {**killable.card["sample"], "n_configs": 60}
    card_path = killable.write(tmp_path, sample=small)
    assert main(["sample", str(card_path), "--quiet"]) == 0
    legacy = load_card(str(card_path)).physics_hash(with_added_keys=True)
    assert legacy != load_card(str(card_path)).physics_hash()
    ckpt = h5(tmp_path).with_suffix(".ckpt")
    payload = torch.load(ckpt, weights_only=False)
    for stored_hash, code in (("0123456789abcdef", 2), (legacy, 0)):
        payload["physics_hash"] = stored_hash
        torch.save(payload, ckpt)
        before = h5(tmp_path).read_bytes()
        grown = killable.write(tmp_path, sample={**small, "n_configs": 100})
        assert main(["sample", str(grown), "--quiet", "--resume"]) == code
        if code:
            assert "resume refused" in capsys.readouterr().err
            assert h5(tmp_path).read_bytes() == before
    assert len(read_ensemble(h5(tmp_path)).traj) == 100


def test_a_state_field_missing_without_a_rebuild_is_refused():
    from mcmc.driver import state_from_dict
    from mcmc.kernels.protocol import ChainState

    template = ChainState(x=torch.zeros(2, 3), logp=torch.zeros(2))
    with pytest.raises(ValueError, match="checkpoint state has fields"):
        state_from_dict(template, {"x": torch.ones(2, 3)})
    rebuilt = state_from_dict(template, {"x": torch.ones(2, 3)},
                              rebuild=lambda x: ChainState(x=x, logp=-x.sum(1)))
    assert torch.equal(rebuilt.logp, torch.full((2,), -3.0))
    with pytest.raises(ValueError):
        state_from_dict(template, {"x": torch.ones(2, 3), "logp": torch.zeros(2), "extra": 1})

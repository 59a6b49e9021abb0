"""Flow jobs refuse before they write: a resume with a changed training card never touches the flow
checkpoint (the original card still resumes), and a damaged flow checkpoint is a one-line error."""

from pathlib import Path

import pytest
import yaml

from mcmc.cli import main

CARD = {
    "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "flow"},
    "flow": {"n_layers": 2, "hidden": [4]},
    "train": {"steps": 3, "batch_size": 8},
    "sample": {"n_configs": 20, "n_therm": 2, "n_chains": 2, "progress": False},
    "seed": 3,
    "device": "cpu",
}


def write_card(tmp_path, **changes):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({**CARD, "out": str(tmp_path / "out"), **changes}))
    return path


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".h5", ".ckpt", ".pt")}


def one_line_error(capsys, *args):
    capsys.readouterr()
    assert main([*map(str, args)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_changed_training_is_refused_before_the_flow_changes(tmp_path, capsys):
    """Problem 3: more train.steps on --resume used to retrain (overwriting .flow.pt) and only then refuse,
    after which even the original card was refused."""
    card = write_card(tmp_path)
    assert main(["sample", str(card), "--quiet"]) == 0
    before = snapshot(tmp_path / "out")
    more = write_card(tmp_path, train={"steps": 10, "batch_size": 8},
                      sample={**CARD["sample"], "n_configs": 30})
    err = one_line_error(capsys, "sample", more, "--quiet", "--resume")
    assert "train.steps was 3 and is now 10" in err
    assert snapshot(tmp_path / "out") == before
    grown = write_card(tmp_path, sample={**CARD["sample"], "n_configs": 30})
    assert main(["sample", str(grown), "--quiet", "--resume"]) == 0


def test_resume_needs_its_flow(tmp_path, capsys):
    card = write_card(tmp_path)
    assert main(["sample", str(card), "--quiet"]) == 0
    (tmp_path / "out" / "out.flow.pt").unlink()
    before = snapshot(tmp_path / "out")
    err = one_line_error(capsys, "sample", card, "--quiet", "--resume")
    assert "out.flow.pt: the flow this ensemble was sampled with is missing" in err
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("damage", [b"not a checkpoint", None])
def test_damaged_flow_checkpoint_is_a_one_line_error(tmp_path, capsys, damage):
    card = write_card(tmp_path)
    assert main(["train", str(card), "--quiet"]) == 0
    flow = tmp_path / "out" / "out.flow.pt"
    flow.write_bytes(flow.read_bytes()[:300] if damage is None else damage)
    for command in ("sample", "run"):
        err = one_line_error(capsys, command, card, "--quiet")
        assert f"{flow}: not a readable flow checkpoint" in err
    assert not (tmp_path / "out" / "out.r0.h5").exists()


def test_train_is_refused_while_the_ensemble_has_a_writer(tmp_path, capsys):
    """``latflow train`` writes the flow beside replica 0, so it takes that replica's lock too."""
    from mcmc.io.lock import WriterLock

    card = write_card(tmp_path)
    with WriterLock(tmp_path / "out" / "out.r0.h5"):
        err = one_line_error(capsys, "train", card, "--quiet")
    assert "out.r0.h5 is being written by pid" in err
    assert not (tmp_path / "out" / "out.flow.pt").exists()

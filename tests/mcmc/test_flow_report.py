"""``latflow run``/``measure`` on a flow ensemble: the all-proposal reweighted estimate beside the chain,
the agreement line, Pareto k̂ and the ``--json`` keys; the stored per-proposal datasets."""

import json

import h5py
import numpy as np
import yaml

from mcmc.cli import main

CARD = {
    "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "flow"},
    "flow": {"n_layers": 2, "hidden": [4]},
    "train": {"steps": 30, "batch_size": 32},
    "sample": {"n_configs": 400, "n_therm": 20, "n_chains": 2, "progress": False, "proposal_batch": 64},
    "seed": 5,
}


def test_flow_run_reports_reweighted_values_and_pareto_k(tmp_path, capsys):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({**CARD, "out": str(tmp_path / "out")}))
    assert main(["run", str(path), "--json", "--quiet", "--no-plots"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    for key in ("theory", "sampler", "n_configs", "acceptance", "ess", "observables", "timing"):
        assert key in summary  # the DESIGN.md keys stay
    assert set(summary["reweighted"]) == set(summary["observables"])
    for name, rw in summary["reweighted"].items():
        chain = summary["observables"][name]
        z = abs(chain["mean"] - rw["mean"]) / np.hypot(chain["err"], rw["err"])
        assert rw["err"] > 0 and abs(rw["z"] - z) < 1e-9
    assert isinstance(summary["pareto_k"], float) and isinstance(summary["agree"], bool)
    assert isinstance(summary["warnings"], list)
    text = "\n".join(out)
    assert "reweighted over all 800 proposals" in text and "Pareto k̂" in text
    assert ("chain and reweighted values agree" in text) == summary["agree"]

    h5 = tmp_path / "out" / "out.r0.h5"
    with h5py.File(h5) as f:
        assert set(f["proposal_obs"]) == set(f["obs"])
        accepted = f["accepted"][()]
        for name in f["obs"]:  # an accepted proposal is the chain's new configuration
            prop, chain = f["proposal_obs"][name][()], f["obs"][name][()]
            assert prop.shape == chain.shape == (400, 2)
            np.testing.assert_allclose(prop[accepted], chain[accepted], rtol=1e-12)
            assert not np.allclose(prop[~accepted], chain[~accepted])
    assert main(["verify", str(h5)]) == 0
    capsys.readouterr()
    assert main(["measure", str(h5), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["reweighted"] == summary["reweighted"] and again["pareto_k"] == summary["pareto_k"]
    with h5py.File(h5, "r+") as f:  # verify covers the per-proposal datasets too
        f["proposal_obs/mag2"][3, 1] += 1.0
    assert main(["verify", str(h5)]) == 1
    assert "proposal_obs/mag2" in capsys.readouterr().out


def test_hmc_summary_has_the_flow_keys_empty(tmp_path, capsys):
    path = tmp_path / "card.yaml"
    card = {**CARD, "sampler": {"kind": "hmc"}, "out": str(tmp_path / "out")}
    path.write_text(yaml.safe_dump(card))
    assert main(["run", str(path), "--json", "--quiet", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["reweighted"] is None and summary["pareto_k"] is None and summary["warnings"] == []


def test_flow_resume_after_stop_is_bit_identical(tmp_path, monkeypatch, stop_after):
    """A flow chain stopped mid-buffer resumes from its checkpointed (compacted) buffer bit-identically,
    per-proposal datasets included."""
    sample = {**CARD["sample"], "proposal_batch": 16, "refill_seconds": None, "checkpoint_every": 30}
    card = {**CARD, "train": {"steps": 5, "batch_size": 16}, "sample": sample}
    paths = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "card.yaml")
        paths[-1].write_text(yaml.safe_dump({**card, "out": str(tmp_path / name / "out")}))
    assert main(["sample", str(paths[0]), "--quiet"]) == 0
    stop_after(25)
    try:
        main(["sample", str(paths[1]), "--quiet"])
    except SystemExit:
        pass
    monkeypatch.undo()
    with h5py.File(tmp_path / "b" / "out" / "out.r0.h5") as f:
        assert f.attrs["status"] == "running" and 0 < f["traj"].shape[0] < 400
    assert main(["sample", str(paths[1]), "--quiet", "--resume"]) == 0
    a_path, b_path = (tmp_path / name / "out" / "out.r0.h5" for name in ("a", "b"))
    with h5py.File(a_path) as a, h5py.File(b_path) as b:
        for name in ("configs", "traj", "logp", "logq", "accepted", "proposal_logw", "proposal_obs/mag2"):
            assert np.array_equal(a[name][()], b[name][()]), name

"""``latflow compare``: one theory, several samplers, honest costs, and refusal of mixed theories."""

import json

import yaml

from mcmc.cli import main

THEORY = {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}
SAMPLE = {"n_configs": 300, "n_therm": 20, "n_chains": 2, "progress": False, "proposal_batch": 64}


def card(tmp_path, name, **sections):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"theory": THEORY, "sample": SAMPLE, "seed": 4,
                                    "out": str(tmp_path / "out" / name), **sections}))
    return str(path)


def test_compare_table_csv_plots_and_json(tmp_path, capsys):
    cards = [card(tmp_path, "hmc", sampler={"kind": "hmc"}),
             card(tmp_path, "local", sampler={"kind": "local"}),
             card(tmp_path, "flow", sampler={"kind": "flow"}, flow={"n_layers": 2, "hidden": [4]},
                  train={"steps": 30, "batch_size": 32})]
    out = tmp_path / "cmp"
    assert main(["compare", *cards, "--out", str(out), "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["sampler"] for r in rows] == ["hmc", "local", "flow", "flow (best)"]
    best = rows[3]  # per observable the better of the chain and the all-proposal reweighted estimate
    assert set(best["estimator"].values()) <= {"chain", "reweighted"} and rows[2]["estimator"] is None
    for obs, est in best["estimator"].items():
        assert best["tau_int"][obs] <= rows[2]["tau_int"][obs]
        assert (best["tau_int"][obs] == rows[2]["tau_int"][obs]) == (est == "chain")
    for row in rows:
        for key in ("card", "acceptance", "ess", "train_s", "tau_int", "cost_per_indep_s"):
            assert key in row
        assert set(row["tau_int"]) == {"mag2", "absmag", "phi2", "action"}
        for obs, tau in row["tau_int"].items():
            assert abs(row["cost_per_indep_s"][obs] - 2 * tau * row["seconds_per_config"]) < 1e-12
    assert rows[0]["cost_ratio"]["mag2"] == 1.0
    assert rows[0]["ess"] is None and 0 < rows[2]["ess"] <= 1 and rows[2]["train_s"] > 0
    for name in ("compare.md", "compare.csv", "compare.json", "compare_mag2.png", "compare_cost.png"):
        assert (out / name).stat().st_size > 0


def test_compare_refuses_different_theories(tmp_path, capsys):
    a = card(tmp_path, "a", sampler={"kind": "hmc"})
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"theory": {**THEORY, "lam": 2.0}, "out": str(tmp_path / "out" / "b")}))
    assert main(["compare", a, str(path), "--quiet"]) == 2
    assert "compare needs one theory" in capsys.readouterr().err


def test_compare_cpu_clock_uses_the_recorded_cpu_seconds(tmp_path, capsys):
    """``--clock cpu`` costs each card in its process's CPU seconds, which every ensemble file records
    beside the wall-clock ones; the training CPU time comes from the flow checkpoint."""
    import h5py

    cards = [card(tmp_path, "hmc", sampler={"kind": "hmc"}),
             card(tmp_path, "flow", sampler={"kind": "flow"}, flow={"n_layers": 2, "hidden": [4]},
                  train={"steps": 20, "batch_size": 32})]
    assert main(["compare", *cards, "--out", str(tmp_path / "w"), "--json", "--quiet"]) == 0
    wall = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert main(["compare", *cards, "--out", str(tmp_path / "c"), "--json", "--quiet", "--resume",
                 "--clock", "cpu"]) == 0
    cpu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["sampler"] for r in cpu] == ["hmc", "flow", "flow (best)"]
    for name, w, c in zip(("hmc", "flow"), wall[:2], cpu[:2], strict=True):
        with h5py.File(tmp_path / "out" / name / f"{name}.r0.h5") as f:
            attrs = dict(f.attrs)
        # (the --resume pass reopened the complete files and added its few ms to the totals)
        assert c["sample_s"] == attrs["sample_cpu_s"] > 0 and abs(w["sample_s"] - attrs["sample_s"]) < 0.5
        assert c["train_s"] == attrs["train_cpu_s"] and w["train_s"] == attrs["train_s"]
        assert c["tau_int"] == w["tau_int"]
    assert cpu[1]["train_s"] > 0

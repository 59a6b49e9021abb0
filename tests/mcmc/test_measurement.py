"""``latflow measure --obs``: sidecar storage with provenance, reuse, resume after a kill, parameter
changes, user observables, pyerrors export (round trip, and pyerrors' errors equal latflow's)."""

import json
import textwrap

import h5py
import numpy as np
import pytest
import yaml

from mcmc.cli import main


def make_ensemble(tmp_path, theory, n_configs=80, n_chains=1, name="ens"):
    card = {
        "theory": theory,
        "sampler": {"kind": "hmc"},
        "sample": {"n_configs": n_configs, "n_therm": 20, "n_chains": n_chains, "progress": False},
        "seed": 5,
        "out": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    assert main(["sample", str(path), "--quiet"]) == 0
    return tmp_path / name / f"{name}.r0.h5"


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


PHI4 = {"name": "phi4", "shape": [6, 4], "m2": 0.5, "lam": 0.0}


def test_correlators_json_sidecar_and_pyerrors(tmp_path, capsys):
    pe = pytest.importorskip("pyerrors")
    ens = make_ensemble(tmp_path, PHI4)
    out = tmp_path / "obs.json.gz"
    args = ["measure", str(ens), "--obs", "correlators", "--json", "--quiet", "--pyerrors", str(out)]
    assert main(args) == 0
    summary = last_json(capsys)
    obs = summary["observables"]
    for name in ("mag2", "G_0", "G_1", "G_2", "G_3", "meff_1", "chi2", "xi2", "U4"):
        assert set(obs[name]) == {"mean", "err", "tau_int", "tau_int_err"}, name
    side = tmp_path / "ens" / "ens.r0.meas.h5"
    with h5py.File(side) as f:
        g = f["correlators"]
        assert g.attrs["n_done"] == 80 and g.attrs["ensemble"] == "ens.r0.h5"
        assert json.loads(g.attrs["params"]) == {} and g.attrs["code_version"]
        with h5py.File(ens) as e:
            assert np.array_equal(g["crc32"][()], e["crc32"][()])
        c0 = g["c_0"][:, 0]
    loaded = pe.input.json.load_json_dict(str(out), verbose=False)
    assert loaded["G_0"].names == ["ens|r0c0"]
    for name in ("G_0", "G_2", "chi2", "xi2", "U4"):
        o = loaded[name]
        o.gamma_method(S=1.5)
        assert o.value == pytest.approx(obs[name]["mean"], rel=1e-10), name
        assert o.dvalue == pytest.approx(obs[name]["err"], rel=1e-3), name
    # a derived Obs keeps the history of its inputs: G_0 = ⟨c_0⟩ − 4⟨m⟩² has 80 samples in one replica
    assert loaded["G_0"].idl["ens|r0c0"] == range(1, 81) and len(c0) == 80


def test_reuse_resume_and_changed_parameters(tmp_path, capsys):
    ens = make_ensemble(tmp_path, {"name": "u1", "shape": [4, 4], "beta": 1.0}, n_configs=24, n_chains=2)
    side = tmp_path / "ens" / "ens.r0.meas.h5"
    assert main(["measure", str(ens), "--obs", "wilson_loops,polyakov_corr", "--json", "--quiet"]) == 0
    first = last_json(capsys)["observables"]
    assert {"W_1x1", "W_2x2", "creutz_1x1", "V_1", "polyakov_corr_0", "polyakov_corr_2"} <= set(first)
    with h5py.File(side) as f:
        full = f["wilson_loops"]["W_2x1"][()]
        assert full.shape == (24, 2)
    with h5py.File(side, "a") as f:  # a measurement killed after 8 rows, with garbage past them
        f["wilson_loops"].attrs["n_done"] = 8
        f["wilson_loops"]["W_2x1"][10] = 99.0
    assert main(["measure", str(ens), "--obs", "wilson_loops", "--json", "--quiet"]) == 0
    assert last_json(capsys)["observables"]["W_2x1"] == first["W_2x1"]
    with h5py.File(side) as f:
        assert np.array_equal(f["wilson_loops"]["W_2x1"][()], full)
        stamp = f["polyakov_corr"].attrs["updated"]
    assert main(["measure", str(ens), "--obs", "polyakov_corr", "--quiet"]) == 0  # reused: nothing written
    with h5py.File(side) as f:
        assert f["polyakov_corr"].attrs["updated"] == stamp
    assert main(["measure", str(ens), "--obs", "wilson_loops", "--set", "wilson_loops.r_max=1", "--json",
                 "--quiet"]) == 0
    obs = last_json(capsys)["observables"]
    assert "W_1x2" in obs and "W_2x1" not in obs
    with h5py.File(side) as f:
        assert json.loads(f["wilson_loops"].attrs["params"])["r_max"] == 1


def test_user_observable(tmp_path, capsys, monkeypatch):
    (tmp_path / "myobs.py").write_text(textwrap.dedent('''
        import torch

        def moments(phi, theory):
            m = phi.flatten(1).mean(1)
            return torch.stack([m, m**2 * theory.volume], dim=1)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    ens = make_ensemble(tmp_path, PHI4, n_configs=40)
    assert main(["measure", str(ens), "--obs", "myobs:moments", "--json", "--quiet"]) == 0
    obs = last_json(capsys)["observables"]
    assert obs["moments_1"]["mean"] == pytest.approx(obs["mag2"]["mean"], rel=1e-12)
    assert obs["moments_1"]["err"] == pytest.approx(obs["mag2"]["err"], rel=1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--obs", "nonsense"], "unknown observable group"),
        (["--obs", "wilson_loops"], "not phi4"),
        (["--obs", "correlators", "--set", "correlators.x=1"], "unknown parameter"),
        (["--obs", "correlators", "--set", "gradient_flow.t_max=1"], "not measured"),
        (["--obs", "nomodule:f"], "cannot be imported"),
        (["--set", "correlators.x=1"], "need --obs"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    ens = make_ensemble(tmp_path, PHI4, n_configs=4)
    capsys.readouterr()
    assert main(["measure", str(ens), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_gradient_flow_group(tmp_path, capsys):
    ens = make_ensemble(tmp_path, {"name": "sun", "shape": [2, 2, 2, 2], "beta": 1.0, "N": 3}, n_configs=6)
    args = ["measure", str(ens), "--obs", "gradient_flow", "--json", "--quiet",
            "--set", "gradient_flow.t_max=0.6", "--set", "gradient_flow.dt=0.2", "--set",
            "gradient_flow.report_every=1"]
    assert main(args) == 0
    obs = last_json(capsys)["observables"]
    assert {"t2E_0.2", "t2E_0.4", "t2E_0.6", "t2E_plaq_0.6"} <= set(obs)
    with h5py.File(tmp_path / "ens" / "ens.r0.meas.h5") as f:
        g = f["gradient_flow"]
        assert json.loads(g.attrs["params"]) == {"t_max": 0.6, "dt": 0.2, "q_every": 2, "report_every": 1,
                                                 "tol": 1e-5}
        assert set(g) == {"crc32", *(f"E_{k}" for k in range(4)), *(f"Eplaq_{k}" for k in range(4)),
                          "Q_0", "Q_2"}


def test_mpi_split_gives_the_same_rows(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    pytest.importorskip("mpi4py")
    if mpiexec is None:
        pytest.skip("no mpiexec")
    ens = make_ensemble(tmp_path, {"name": "u1", "shape": [4, 4], "beta": 1.0}, n_configs=20, n_chains=2)
    assert main(["measure", str(ens), "--obs", "wilson_loops", "--quiet"]) == 0
    side = tmp_path / "ens" / "ens.r0.meas.h5"
    with h5py.File(side) as f:
        serial = {k: f["wilson_loops"][k][()] for k in f["wilson_loops"]}
    side.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    cmd = [mpiexec, "-n", "2", sys.executable, "-m", "mcmc.cli", "measure", str(ens), "--obs", "wilson_loops",
           "--quiet", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "W_1x1" in json.loads(r.stdout.strip().splitlines()[-1])["observables"]
    with h5py.File(side) as f:
        for k, v in serial.items():
            np.testing.assert_array_equal(f["wilson_loops"][k][()], v)


def test_card_measure_section_in_stream(tmp_path, capsys, monkeypatch):
    (tmp_path / "loopobs.py").write_text("def cos_sum(x, theory):\n    return x.cos().flatten(1).mean(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    card = {
        "theory": {"name": "u1", "shape": [4, 4], "beta": 1.0},
        "sampler": {"kind": "hmc"},
        "sample": {"n_configs": 30, "n_therm": 10, "n_chains": 2, "progress": False},
        "measure": {"obs": ["wilson_loops", "loopobs:cos_sum"],
                    "params": {"wilson_loops": {"r_max": 2, "t_max": 2}}},
        "seed": 2,
        "out": str(tmp_path / "ens"),
    }
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    assert main(["run", str(path), "--json", "--quiet", "--no-plots"]) == 0
    obs = last_json(capsys)["observables"]
    assert {"plaquette", "W_1x1", "W_2x2", "creutz_2x2", "V_2", "cos_sum"} <= set(obs)
    assert not any(":" in k for k in obs)
    assert obs["W_1x1"]["mean"] == pytest.approx(obs["plaquette"]["mean"], rel=1e-12)
    with h5py.File(tmp_path / "ens" / "ens.r0.h5") as f:
        assert "wilson_loops:W_1x2" in f["obs"]
    # post-hoc measurement of the same group on the same configurations agrees
    assert main(["measure", str(tmp_path / "ens" / "ens.r0.h5"), "--obs", "wilson_loops", "--set",
                 "wilson_loops.r_max=2", "--set", "wilson_loops.t_max=2", "--json", "--quiet"]) == 0
    again = last_json(capsys)["observables"]
    assert again["creutz_2x2"] == obs["creutz_2x2"]
    card["measure"] = {"obs": ["nonsense"]}
    path.write_text(yaml.safe_dump(card))
    assert main(["run", str(path), "--quiet", "--overwrite"]) == 2
    assert "unknown observable group" in capsys.readouterr().err

"""Local-update kernels (``mcmc.kernels.local``): φ⁴ Metropolis against exact results, the kernel
protocol, the RNG contract (determinism, resume), and the unchanged driver / HDF5 / CLI path with
``sampler.kind: local``.

Errors are Wolff Gamma-method errors with each chain a replica; tolerances are 4σ.
"""

import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from lattice.exact import FreeField
from lattice.scalar import Phi4
from mcmc.card import CardError, parse_card
from mcmc.cli import main
from mcmc.kernels.local.common import LocalKernelError, chain_keys, checkerboard_order, neighbours
from mcmc.kernels.local.phi4 import LocalPhi4, default_step_size
from mcmc.kernels.local.registry import local_kernel_factory
from mcmc.runtime import BuildContext
from mcmc.setup import sampler_spec
from observables.gamma import gamma_analysis


def test_neighbour_table_and_order():
    shape = (3, 4, 2)
    nbr, order = neighbours(shape), checkerboard_order(shape)
    idx = np.arange(24).reshape(shape)
    for mu in range(3):
        assert np.array_equal(nbr[:, mu, 0], np.roll(idx, -1, axis=mu).reshape(-1))
        assert np.array_equal(nbr[:, mu, 1], np.roll(idx, 1, axis=mu).reshape(-1))
    assert sorted(order) == list(range(24))
    parity = np.indices(shape).sum(0).reshape(-1)[order] % 2
    assert np.all(np.diff(parity) >= 0)  # even sites first


@pytest.mark.parametrize(("shape", "m2", "lam"),
                         [((8, 8), -4.0, 8.0), ((2, 3, 4), 0.5, 0.3), ((3, 2, 2, 2), -1.0, 1.0)])
def test_sweep_changes_action_by_its_local_differences(shape, m2, lam, gen):
    """Σ of the site-local ΔS over accepted hits equals S(new) − S(old) of ``Phi4.action``: the local
    action is right for any D, for extent 2 (x+μ = x−μ) and odd extents (no proper checkerboard)."""
    theory = Phi4(shape, m2, lam)
    kernel = LocalPhi4(theory, n_hits=4)
    g = gen(1)
    x = theory.random_field(5, g)
    for _ in range(3):
        new, rate, d_action = kernel.sweep(x, g)
        change = theory.action(new) - theory.action(x)
        assert torch.allclose(change, torch.from_numpy(d_action), atol=1e-10, rtol=0)
        assert np.all((rate > 0.2) & (rate < 1.0))
        x = new


def test_free_field_matches_exact_fourier_values(gen, within, run_chain):
    """L = 8, m² = 0.5, λ = 0: ⟨φ²⟩, ⟨M²⟩/V and ⟨S⟩/V within 4σ of the Fourier-mode values."""
    theory, exact = Phi4((8, 8), 0.5, 0.0), FreeField((8, 8), 0.5)
    g = gen(2)
    chain = run_chain(LocalPhi4(theory), theory.random_field(64, g), g, n_therm=60, n_meas=800)
    obs, rates = chain.obs, chain.info["accept_prob"]
    for name, value in (("phi2", exact.phi2()), ("mag2", exact.mag2()), ("action", exact.action())):
        res = gamma_analysis(obs[name])
        assert res.err < 0.025 * value, (name, res.err)
        assert within(res, value), (name, res.mean, res.err, value)
    assert 0.3 < rates.mean() < 0.8


def test_interacting_three_site_ring_matches_quadrature(gen, within, run_chain):
    """λ > 0 in a double well (m² = −1, λ = 0.5) on a periodic ring of 3 sites, where ⟨φ²⟩, ⟨M²⟩/V and
    ⟨|M|⟩/V follow from a 3-dimensional quadrature of e^{−S} (a Riemann sum, spectrally accurate here).

    On the ring S = Σ_x [(2 + m²) φ_x² + λ φ_x⁴] − 2(φ₀φ₁ + φ₁φ₂ + φ₂φ₀)."""
    m2, lam = -1.0, 0.5
    theory = Phi4((3,), m2, lam)
    probe = theory.random_field(4, gen(9))
    f0, f1, f2 = probe.unbind(1)

    def ring_action(a, b, c):
        return (2 + m2) * (a * a + b * b + c * c) + lam * (a**4 + b**4 + c**4) - 2 * (a * b + b * c + c * a)

    assert torch.allclose(ring_action(f0, f1, f2), theory.action(probe), atol=1e-12, rtol=0)
    grid = np.linspace(-4.0, 4.0, 161)
    a, b, c = np.meshgrid(grid, grid, grid, indexing="ij", sparse=True)
    weight = np.exp(-ring_action(a, b, c))
    weight /= weight.sum()
    mag = a + b + c
    exact = {"phi2": float((weight * (a * a + b * b + c * c)).sum() / 3),
             "mag2": float((weight * mag * mag).sum() / 3), "absmag": float((weight * np.abs(mag)).sum() / 3)}
    g = gen(3)
    obs = run_chain(LocalPhi4(theory, n_hits=2), theory.random_field(64, g), g, n_therm=50, n_meas=1500).obs
    for name in ("phi2", "mag2", "absmag"):
        res = gamma_analysis(obs[name])
        assert res.err < 0.01 * exact[name], (name, res.err)
        assert within(res, exact[name]), (name, res.mean, res.err, exact[name])


def test_step_records_follow_the_protocol(gen):
    theory = Phi4((4, 4), -1.0, 1.0)
    kernel = LocalPhi4(theory, n_hits=2, step_size=0.7)
    g = gen(4)
    state = kernel.init(theory.random_field(3, g))
    new, info = kernel.step(state, g)
    assert new.x.shape == state.x.shape and new.x.dtype == state.x.dtype
    assert torch.allclose(new.logp, -theory.action(new.x), atol=1e-12, rtol=0)
    assert info.accepted.dtype == torch.bool and info.accepted.all()
    assert info.accept_prob.shape == (3,) and bool(((info.accept_prob > 0) & (info.accept_prob < 1)).all())
    for nan in (info.dH, info.logq, info.proposal_logw):
        assert nan.shape == (3,) and torch.isnan(nan).all()
    assert not torch.equal(new.x, state.x)
    assert kernel.delta == 0.7 and LocalPhi4(theory).delta == pytest.approx(default_step_size(theory))
    # float32 fields stay float32 (the sweep itself runs in float64)
    s32 = kernel.init(state.x.float())
    assert kernel.step(s32, g)[0].x.dtype == torch.float32


def test_same_generator_state_gives_identical_chains(gen):
    """All randomness comes from the generator: same seed → same chains; restoring the generator state
    and the chain state mid-run (a resume) continues bit-identically; another seed differs."""
    theory = Phi4((6, 6), -2.0, 1.0)
    kernel = LocalPhi4(theory)

    def chain(seed, n):
        g = gen(seed)
        state = kernel.init(theory.random_field(4, g))
        for _ in range(n):
            state, _ = kernel.step(state, g)
        return state, g

    a, _ = chain(5, 10)
    b, _ = chain(5, 10)
    assert torch.equal(a.x, b.x) and torch.equal(a.logp, b.logp)
    mid, g = chain(5, 4)
    saved = g.get_state()
    g2 = gen(0)
    g2.set_state(saved)
    resumed = mid
    for _ in range(6):
        resumed, _ = kernel.step(resumed, g2)
    assert torch.equal(resumed.x, a.x)
    assert not torch.equal(chain(6, 10)[0].x, a.x)
    assert chain_keys(4, gen(1)).dtype == np.uint64


def test_bad_inputs_are_refused():
    theory = Phi4((4, 4), 0.0, 1.0)
    kernel = LocalPhi4(theory)
    with pytest.raises(LocalKernelError, match="CPU only"):
        kernel.init(torch.zeros((2, 4, 4), device="meta"))
    with pytest.raises(LocalKernelError, match=">= 2"):
        LocalPhi4(Phi4((1, 4), 0.0, 1.0))
    with pytest.raises(ValueError, match="n_hits"):
        LocalPhi4(theory, n_hits=0)
    card = parse_card({"theory": {"name": "phi4", "shape": [4, 4], "m2": 0.0, "lam": 1.0},
                       "sampler": {"kind": "local"}, "device": "cuda"})
    with pytest.raises(CardError, match="CPU only"):
        sampler_spec(card)
    with pytest.raises(ValueError, match="ising"):
        local_kernel_factory("ising")


def test_card_local_section():
    card = parse_card({"theory": {"name": "phi4", "shape": [4, 4], "m2": 0.0, "lam": 1.0},
                       "sampler": {"kind": "local"}, "local": {"n_hits": 5, "step_size": 0.4}})
    theory = Phi4((4, 4), 0.0, 1.0)
    kernel = sampler_spec(card).build(theory, BuildContext(torch.device("cpu"), torch.float64)).kernel
    assert isinstance(kernel, LocalPhi4) and kernel.n_hits == 5 and kernel.delta == 0.4
    assert card.local.n_overrelax == 2


THEORIES = {
    "phi4": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "u1": {"name": "u1", "shape": [4, 4], "beta": 1.5},
    "sun": {"name": "sun", "shape": [4, 4], "beta": 2.0, "N": 2},
}


def write_card(tmp_path, theory, n_configs=30):
    card = {"theory": THEORIES[theory], "sampler": {"kind": "local"}, "local": {"n_overrelax": 1},
            "sample": {"n_configs": n_configs, "n_therm": 5, "n_chains": 2, "checkpoint_every": 10,
                       "progress": False},
            "seed": 11, "device": "cpu", "out": str(tmp_path / "out")}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.mark.parametrize("theory", sorted(THEORIES))
def test_cli_run_and_verify_with_local_sampler(tmp_path, capsys, theory):
    assert main(["run", str(write_card(tmp_path, theory)), "--json", "--quiet", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sampler"] == "local" and summary["n_configs"] == 60
    assert 0 < summary["acceptance"] <= 1
    path = tmp_path / "out" / "out.r0.h5"
    with h5py.File(path) as f:
        assert f.attrs["status"] == "complete" and f["configs"].shape[:2] == (30, 2)
        assert np.all(np.isnan(f["dH"][()])) and np.all(np.isnan(f["logq"][()]))
        assert np.all(f["accepted"][()])
        # the reported acceptance is the rate of accepted site updates, not "some site moved" (= 1)
        assert summary["acceptance"] == pytest.approx(f["accept_prob"][()].mean(), rel=1e-12)
    assert main(["verify", str(path)]) == 0


def test_cli_resume_is_bit_identical(tmp_path, monkeypatch, stop_after):
    """A local-update run stopped mid-way and resumed stores exactly the configurations of an
    uninterrupted run."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(["sample", str(write_card(tmp_path / "a", "u1")), "--quiet"]) == 0
    part = str(write_card(tmp_path / "b", "u1"))
    stop_after(17)
    with pytest.raises(SystemExit):
        main(["sample", part, "--quiet"])
    monkeypatch.undo()
    assert main(["sample", part, "--quiet", "--resume"]) == 0
    file_a, file_b = (tmp_path / run / "out" / "out.r0.h5" for run in ("a", "b"))
    with h5py.File(file_a) as a, h5py.File(file_b) as b:
        for name in ("configs", "traj", "logp", "obs/plaquette"):
            assert np.array_equal(a[name][()], b[name][()]), name

"""Wolff single-cluster updates of the embedded Ising signs for φ⁴ (``mcmc.kernels.local.phi4.WolffPhi4``):
exact results (free field, a 3-site ring by quadrature), agreement with HMC in the interacting double well,
the speed-up of τ_int(|M|) near criticality, the kernel protocol and the card.

Errors are Wolff Gamma-method errors with each chain a replica; tolerances are 4σ.
"""

import numpy as np
import pytest
import torch

from lattice.exact import FreeField
from lattice.scalar import Phi4
from mcmc.card import parse_card
from mcmc.kernels.hmc import HMC
from mcmc.kernels.local.common import LocalKernelError, neighbours
from mcmc.kernels.local.phi4 import LocalPhi4, WolffPhi4, wolff_clusters
from mcmc.kernels.local.registry import local_kernel_factory
from observables.gamma import gamma_analysis


def test_a_cluster_flips_one_connected_same_sign_set(gen):
    """One flip keeps every |φ_x|, and the flipped sites are one nearest-neighbour-connected set of
    equal sign; with φ_x φ_y huge every same-sign neighbour joins, so the whole same-sign component of the
    start flips (here: all sites of a positive field)."""
    theory = Phi4((6, 5), -2.0, 1.0)
    nbr = neighbours(theory.shape)
    g = gen(1)
    phi = theory.random_field(8, g).reshape(8, -1).numpy().copy()
    old = phi.copy()
    rng = np.arange(1, 9, dtype=np.uint64) * np.uint64(977)
    size = wolff_clusters(phi, nbr, rng, 1)
    assert np.allclose(np.abs(phi), np.abs(old), atol=0, rtol=0)
    for b in range(8):
        flipped = np.flatnonzero(phi[b] != old[b])
        assert len(flipped) == size[b] >= 1
        assert len(set(np.sign(old[b, flipped]))) == 1
        reached, frontier = {flipped[0]}, [flipped[0]]
        while frontier:
            x = frontier.pop()
            for y in nbr[x].reshape(-1):
                if y in set(flipped) and y not in reached:
                    reached.add(y)
                    frontier.append(y)
        assert reached == set(flipped)
    strong = np.full((2, 30), 10.0)
    wolff_clusters(strong, nbr, np.array([3, 4], dtype=np.uint64), 1)
    assert np.all(strong == -10.0)


def test_free_field_matches_exact_fourier_values(gen, within, run_chain):
    """L = 8, m² = 0.5, λ = 0: ⟨φ²⟩, ⟨M²⟩/V and ⟨S⟩/V within 4σ of the Fourier-mode values."""
    theory, exact = Phi4((8, 8), 0.5, 0.0), FreeField((8, 8), 0.5)
    g = gen(12)
    chain = run_chain(WolffPhi4(theory, n_clusters=2), theory.random_field(64, g), g, n_therm=60, n_meas=600)
    for name, value in (("phi2", exact.phi2()), ("mag2", exact.mag2()), ("action", exact.action())):
        res = gamma_analysis(chain.obs[name])
        assert res.err < 0.03 * value, (name, res.err)
        assert within(res, value), (name, res.mean, res.err, value)


def test_interacting_three_site_ring_matches_quadrature(gen, within, run_chain):
    """Double well m² = −1, λ = 0.5 on a periodic 3-site ring (extent 3: one bond per neighbour pair)
    against a Riemann-sum quadrature of e^{−S}, with the cluster flips doing much of the sign changes."""
    m2, lam = -1.0, 0.5
    theory = Phi4((3,), m2, lam)
    grid = np.linspace(-4.0, 4.0, 161)
    a, b, c = np.meshgrid(grid, grid, grid, indexing="ij", sparse=True)
    action = (2 + m2) * (a * a + b * b + c * c) + lam * (a**4 + b**4 + c**4) - 2 * (a * b + b * c + c * a)
    weight = np.exp(-action)
    weight /= weight.sum()
    mag = a + b + c
    exact = {"phi2": float((weight * (a * a + b * b + c * c)).sum() / 3),
             "mag2": float((weight * mag * mag).sum() / 3), "absmag": float((weight * np.abs(mag)).sum() / 3)}
    g = gen(13)
    kernel = WolffPhi4(theory, n_hits=2, step_size=0.6, n_clusters=2)
    obs = run_chain(kernel, theory.random_field(64, g), g, n_therm=50, n_meas=1500).obs
    for name in ("phi2", "mag2", "absmag"):
        res = gamma_analysis(obs[name])
        assert res.err < 0.015 * exact[name], (name, res.err)
        assert within(res, exact[name]), (name, res.mean, res.err, exact[name])


def test_interacting_L8_agrees_with_hmc(gen, run_chain):
    """L = 8, m² = −4, λ = 6.008 (ξ ≈ L/4, Albergo et al. 2019): ⟨M²⟩/V and ⟨|M|⟩/V of the cluster
    sampler and of HMC agree within 4σ of their combined Gamma-method errors."""
    theory, g = Phi4((8, 8), -4.0, 6.008), gen(14)
    hmc = run_chain(HMC(theory, tau=1.0, n_steps=8), theory.random_field(32, g), g, n_therm=100, n_meas=800)
    wolff = run_chain(WolffPhi4(theory, n_clusters=2), theory.random_field(64, g), g, n_therm=100, n_meas=800)
    for name in ("mag2", "absmag"):
        a, b = gamma_analysis(hmc.obs[name]), gamma_analysis(wolff.obs[name])
        sigma = np.hypot(a.err, b.err)
        assert sigma < 0.03 * abs(a.mean), (name, a.err, b.err)
        assert abs(a.mean - b.mean) < 4 * sigma, (name, a.mean, a.err, b.mean, b.err)


def test_clusters_decorrelate_abs_magnetisation_near_criticality(gen, run_chain):
    """L = 16, m² = −4, λ = 5.0 (ξ ≈ L/4): τ_int(|M|) of Metropolis + one cluster per sweep is below a
    fifth of that of the same Metropolis sweeps alone, both from the Gamma method on 16 chains."""
    theory = Phi4((16, 16), -4.0, 5.0)
    tau = {}
    for label, kernel in (("metropolis", LocalPhi4(theory)), ("wolff", WolffPhi4(theory, n_clusters=1))):
        g = gen(15)
        obs = run_chain(kernel, theory.random_field(16, g), g, n_therm=300, n_meas=1500).obs
        tau[label] = gamma_analysis(obs["absmag"]).tau_int
    assert tau["wolff"] < 5.0, tau
    assert tau["wolff"] < tau["metropolis"] / 5, tau


def test_step_records_and_card(gen):
    theory = Phi4((4, 4), -1.0, 1.0)
    kernel = WolffPhi4(theory, n_hits=2, step_size=0.7, n_clusters=3)
    g = gen(16)
    state = kernel.init(theory.random_field(3, g))
    new, info = kernel.step(state, g)
    assert new.x.shape == state.x.shape and new.x.dtype == state.x.dtype
    assert torch.allclose(new.logp, -theory.action(new.x), atol=1e-12, rtol=0)
    assert info.accept_prob.shape == (3,) and bool(((info.accept_prob > 0) & (info.accept_prob < 1)).all())
    with pytest.raises(ValueError, match="n_clusters"):
        WolffPhi4(theory, n_clusters=0)
    raw = {"theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}, "sampler": {"kind": "local"}}
    plain = parse_card(raw)
    card = parse_card({**raw, "local": {"cluster": "wolff", "n_clusters": 4}})
    phi4 = local_kernel_factory("phi4")
    built = phi4(theory, **card.local.model_dump())
    assert isinstance(built, WolffPhi4) and built.n_clusters == 4
    assert type(phi4(theory, **plain.local.model_dump())) is LocalPhi4
    assert card.physics_hash() != plain.physics_hash()
    # a plain Metropolis card hashes as it did before the cluster keys existed (its ensembles resume)
    assert plain.physics_hash() == "ef1c5d26dbe6b1e0"
    gauge = parse_card({"theory": {"name": "u1", "shape": [4, 4], "beta": 1.0}, "sampler": {"kind": "local"},
                        "local": {"cluster": "wolff"}})
    with pytest.raises(LocalKernelError, match="phi4 only"):
        local_kernel_factory("u1")(type("U1", (), {"name": "u1"})(), **gauge.local.model_dump())

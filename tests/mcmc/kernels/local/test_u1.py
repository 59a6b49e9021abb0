"""U(1) heatbath + overrelaxation (``mcmc.kernels.local.u1``): the von Mises sampler, exact bookkeeping of S,
overrelaxation at fixed S, gauge covariance, and the 2D exact plaquette and ⟨Q²⟩ (4σ, Gamma method)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lattice import exact_u1
from lattice.u1 import U1
from mcmc.kernels.local.u1 import LocalU1, von_mises
from observables.gamma import gamma_analysis


@pytest.mark.parametrize("kappa", [0.0, 1e-6, 0.7, 4.0, 40.0])
def test_von_mises_draws_follow_the_density(kappa):
    """Kolmogorov–Smirnov against scipy's von Mises CDF (the uniform law for κ = 0), 20000 draws."""
    rng = np.array([2024 + int(1000 * kappa)], dtype=np.uint64)
    draws = np.array([von_mises(kappa, rng, 0) for _ in range(20000)])
    assert np.all((draws > -math.pi) & (draws <= math.pi))
    cdf = stats.uniform(-math.pi, 2 * math.pi).cdf if kappa == 0 else stats.vonmises(kappa).cdf
    assert stats.kstest(draws, cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4), (4, 3, 2, 3)])
def test_sweeps_change_action_by_the_local_differences(shape, sweeps_checked):
    """Heatbath and overrelaxation: the sum of the link-local ΔS equals S(new) − S(old) of ``U1.action``,
    which checks the staple for any D, extent 2 and odd extents."""
    new = sweeps_checked(LocalU1(U1(shape, 1.3), n_overrelax=2), n_chains=3)
    assert new.abs().max() <= math.pi


@pytest.mark.parametrize("shape", [(8, 8), (4, 4, 4, 4)])
def test_overrelaxation_keeps_the_action(shape, gen):
    theory = U1(shape, 2.0)
    kernel = LocalU1(theory)
    g = gen(2)
    x, _ = kernel.sweeps(theory.random_field(4, g), g, n_overrelax=0)
    y = kernel.overrelax(x)
    assert (theory.action(y) - theory.action(x)).abs().max() < 1e-10
    assert (y - x).abs().max() > 1.0  # it moves the links


def test_updates_are_gauge_covariant(gen):
    """Updating a gauge-transformed configuration with the same random numbers gives the transformed
    result: the plaquette angles of the two agree mod 2π (staple phases transform with the link)."""
    theory = U1((6, 6), 2.0)
    kernel = LocalU1(theory)
    g = gen(3)
    x = theory.random_field(2, g)
    alpha = 2 * math.pi * torch.rand((2, 6, 6), generator=g, dtype=torch.float64)
    a, _ = kernel.sweeps(x, gen(4))
    b, _ = kernel.sweeps(theory.gauge_transform(x, alpha), gen(4))
    diff = theory.plaquettes(a) - theory.plaquettes(b)
    assert torch.allclose(torch.remainder(diff + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros_like(diff), atol=1e-9)


def test_same_seed_same_chain(gen, same_seed_chain):
    kernel = LocalU1(U1((4, 4, 4), 1.0))
    a, _, info = same_seed_chain(kernel, n_chains=3, n_therm=3)
    assert info["accepted"].all() and np.array_equal(info["accept_prob"], np.ones((1, 3)))
    assert info["accept_prob"].dtype == np.float64 and np.isnan(info["dH"]).all()
    assert kernel.step(kernel.init(a.x.float()), gen(9))[0].x.dtype == torch.float32


def test_2d_beta2_matches_exact_plaquette_and_q2(gen, within, run_chain):
    """L = 8, β = 2: ⟨cos θ_P⟩, ⟨Q²⟩ and χ_t within 4σ of the character expansion (32 chains)."""
    theory = U1((8, 8), 2.0)
    kernel = LocalU1(theory, n_overrelax=2)
    g = gen(10)
    series = run_chain(kernel, theory.random_field(32, g), g, n_therm=20, n_meas=250).obs
    plaq, q2, chi = (gamma_analysis(series[k]) for k in ("plaquette", "Q2", "chi_t"))
    assert within(plaq, exact_u1.plaquette(2.0, 8)) and plaq.err < 1e-3
    assert within(q2, exact_u1.q2(2.0, 8)) and q2.err < 0.03
    assert within(chi, exact_u1.chi_t(2.0, 8))
    assert np.abs(series["Q"] - np.round(series["Q"])).max() < 1e-8


def test_4d_strong_coupling_plaquette(gen, run_chain):
    """D = 4, β = 0.5, L = 3: ⟨cos θ_P⟩ = u + 8u⁵ du/dβ + O(u⁹), u = I_1/I_0 (the 6-plaquette cubes of
    the strong-coupling expansion, log Z / N_P = log I_0 + (4/3) u⁶ + …); the cube term is resolved.
    Surfaces wrapping the L = 3 torus enter at O(u⁹)."""
    beta = 0.5
    theory = U1((3, 3, 3, 3), beta)
    kernel = LocalU1(theory, n_overrelax=0)  # heatbath alone decorrelates the plaquette at strong coupling
    g = gen(12)
    chain = run_chain(kernel, theory.random_field(32, g), g, n_therm=10, n_meas=300)
    plaq = gamma_analysis(chain.obs["plaquette"])
    u = exact_u1.plaquette_infinite(beta)
    expansion = u + 8 * u**5 * (1.0 - u / beta - u * u)  # d(I_1/I_0)/dβ = 1 − u/β − u²
    assert abs(plaq.mean - expansion) < 4 * plaq.err + 2e-4, (plaq.mean, plaq.err, expansion)
    assert abs(plaq.mean - u) > 4 * plaq.err and plaq.err < 5e-4

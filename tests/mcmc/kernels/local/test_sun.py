"""SU(N) Cabibbo–Marinari heatbath + overrelaxation (``mcmc.kernels.local.sun``): the SU(2) subgroup sampler,
exact bookkeeping of S, overrelaxation at fixed S, unitarity, determinism, and the exact 2D plaquette of
SU(2) and SU(3) (4σ, Gamma method)."""

import numpy as np
import pytest
import torch
from scipy import stats

from lattice import exact_sun
from lattice.sun import unitarity_violation
from lattice.wilson import SUN
from mcmc.kernels.local.sun import LocalSUN, reunitarise, su2_heatbath, su2_x0
from observables.gamma import gamma_analysis


@pytest.mark.parametrize("alpha", [0.0, 0.8, 1.99, 2.0, 7.0])
def test_su2_x0_follows_its_density(alpha):
    """x₀ ∝ sqrt(1 − x₀²) e^{α x₀} on [−1, 1] (Creutz below α = 2, Kennedy–Pendleton above): KS test
    against the CDF tabulated by the trapezoidal rule in θ, x₀ = cos θ (smooth integrand there)."""
    theta = np.linspace(np.pi, 0.0, 20001)
    dens = np.sin(theta) ** 2 * np.exp(alpha * (np.cos(theta) - 1))  # density × |dx₀/dθ|
    table = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.abs(np.diff(theta)))])
    table /= table[-1]

    def cdf(values):
        return np.interp(values, np.cos(theta), table)

    rng = np.array([77 + int(100 * alpha)], dtype=np.uint64)
    draws = np.array([su2_x0(alpha, rng, 0) for _ in range(20000)])
    assert np.all(np.abs(draws) <= 1)
    assert stats.kstest(draws, cdf).pvalue > 1e-3


def test_su2_heatbath_is_a_unit_quaternion_with_isotropic_direction():
    rng = np.array([5], dtype=np.uint64)
    pq = np.array([su2_heatbath(3.0, rng, 0) for _ in range(4000)])
    x = np.stack([pq[:, 0].real, pq[:, 1].imag, pq[:, 1].real, pq[:, 0].imag], axis=1)
    assert np.allclose((x * x).sum(1), 1.0, atol=1e-12)
    direction = x[:, 1:] / np.linalg.norm(x[:, 1:], axis=1, keepdims=True)
    assert np.abs(direction.mean(0)).max() < 4 / np.sqrt(3 * 4000)  # ⟨n⟩ = 0, var(n_i) = 1/3


@pytest.mark.parametrize(("shape", "n"), [((4, 4), 2), ((2, 3, 4), 3), ((3, 2, 2, 2), 3), ((3, 4), 4)])
def test_sweeps_change_action_by_the_local_differences(shape, n, sweeps_checked):
    """Heatbath and overrelaxation: the sum of the subgroup-local ΔS equals S(new) − S(old) of
    ``SUN.action``, which checks the staples for any D and N; the links stay in SU(N)."""
    new = sweeps_checked(LocalSUN(SUN(shape, 2.5, n), n_overrelax=2), n_chains=2)
    unit, det = unitarity_violation(new)
    assert unit < 1e-13 and det < 1e-13


@pytest.mark.parametrize(("shape", "n"), [((6, 6), 2), ((6, 6), 3), ((3, 3, 3, 3), 3)])
def test_overrelaxation_keeps_the_action(shape, n, gen):
    theory = SUN(shape, 3.0, n)
    kernel = LocalSUN(theory)
    g = gen(2)
    x, _ = kernel.sweeps(theory.random_field(3, g), g, n_overrelax=0)
    y = kernel.overrelax(x)
    assert (theory.action(y) - theory.action(x)).abs().max() < 1e-10
    assert (y - x).abs().max() > 0.5


def test_reunitarise_projects_near_unitary_matrices(gen):
    g = gen(3)
    for n in (2, 3, 5):
        u = SUN((2, 2), 1.0, n).random_field(4, g)[:, 0].reshape(-1, n, n).numpy().copy()
        noisy = u + 1e-6 * np.random.default_rng(n).standard_normal(u.shape)
        for m in noisy:
            reunitarise(m, np.empty_like(m))
        unit, det = unitarity_violation(torch.from_numpy(noisy))
        assert unit < 1e-14 and det < 1e-14
        assert np.abs(noisy - u).max() < 1e-5


def test_same_seed_same_chain_and_unitarity_over_many_steps(gen, same_seed_chain):
    kernel = LocalSUN(SUN((4, 4), 4.0, 3))
    a, _, info = same_seed_chain(kernel, n_chains=2, n_therm=19)
    assert a.x.dtype == torch.complex128
    single = kernel.step(kernel.init(a.x.to(torch.complex64)), gen(9))[0]
    assert single.x.dtype == torch.complex64 and single.logp.dtype == torch.float64
    assert max(unitarity_violation(a.x)) < 1e-14
    assert info["accepted"].all() and np.isnan(info["logq"]).all()


@pytest.mark.parametrize(("n", "beta", "n_chains", "n_meas"), [(2, 2.0, 32, 200), (3, 6.0, 16, 150)])
def test_2d_plaquette_matches_character_expansion(n, beta, n_chains, n_meas, gen, within, run_chain):
    """L = 8: ⟨Re tr U_P / N⟩ within 4σ of the exact finite-volume value, SU(2) at β = 2, SU(3) at β = 6."""
    theory = SUN((8, 8), beta, n)
    kernel = LocalSUN(theory, n_overrelax=2)
    g = gen(10 + n)
    chain = run_chain(kernel, theory.random_field(n_chains, g), g, n_therm=20, n_meas=n_meas)
    plaq = gamma_analysis(chain.obs["plaquette"])
    assert within(plaq, exact_sun.plaquette(n, beta, (8, 8))), (plaq.mean, plaq.err)
    assert plaq.err < 1e-3

"""HMC for U(1) link angles (flat dynamics on θ with the analytic Wilson force) against exact results."""

import math

import numpy as np
import pytest
import torch

from lattice import exact_u1
from lattice.u1 import U1
from mcmc.kernels.hmc import HMC, dynamics_for
from mcmc.kernels.integrators import integrate
from observables.gamma import gamma_analysis


@pytest.mark.parametrize("scheme", ["leapfrog", "omelyan"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 3, 4)])
def test_reversibility(scheme, shape, gen):
    th = U1(shape, 2.0)
    dyn = dynamics_for(th)
    g = gen(1)
    x = th.random_field(4, g)
    p = dyn.momentum(x, g)
    fwd = integrate(scheme, dyn, x, p, 0.1, 12)
    back = integrate(scheme, dyn, fwd.x, -fwd.p, 0.1, 12)
    assert torch.allclose(back.x, x, atol=1e-10, rtol=0)
    assert torch.allclose(back.p, -p, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("scheme", "order"), [("leapfrog", 2), ("omelyan", 2)])
def test_energy_violation_scales_with_step_size(scheme, order, gen):
    """|ΔH| ∝ ε^order along a trajectory of fixed length (both schemes are second order)."""
    th = U1((8, 8), 2.0)
    dyn = dynamics_for(th)
    g = gen(2)
    x = th.random_field(32, g)
    p = dyn.momentum(x, g)

    def rms_dh(n_steps):
        end = integrate(scheme, dyn, x, p, 1.0 / n_steps, n_steps)
        dh = dyn.kinetic(end.p) + th.action(end.x) - dyn.kinetic(p) - th.action(x)
        return dh.pow(2).mean().sqrt().item()

    ratio = rms_dh(20) / rms_dh(40)
    assert 2 ** order * 0.8 < ratio < 2 ** order * 1.25


@pytest.mark.parametrize("shape", [(8, 8), (4, 4, 4, 4)])
def test_exp_minus_dh_averages_to_one(shape, gen):
    """Creutz's identity ⟨e^{−ΔH}⟩ = 1 in equilibrium, with a coarse step so that ΔH = O(1)."""
    th = U1(shape, 2.0)
    coarse = HMC(th, tau=1.0, n_steps=3 if len(shape) == 2 else 8, integrator="leapfrog")
    warm = HMC(th, tau=1.0, n_steps=8)
    g = gen(3)
    state = warm.init(th.random_field(64, g))
    for _ in range(30):
        state, _ = warm.step(state, g)
    samples, acc = [], []
    for _ in range(40):
        state, info = coarse.step(state, g)
        samples.append(torch.exp(-info.dH))
        acc.append(info.accepted.double().mean().item())
    res = gamma_analysis(torch.stack(samples).numpy())
    assert 0.3 < np.mean(acc) < 0.95  # the identity is tested where it is not trivial
    assert abs(res.mean - 1.0) < 4 * res.err
    assert res.err < 0.05


def test_hmc_2d_beta2_matches_exact_plaquette_and_q2(gen, within, run_chain):
    """L = 8, β = 2: plaquette and ⟨Q²⟩ within 4σ (Gamma method over 64 chains); Q integer throughout."""
    th = U1((8, 8), 2.0)
    g = gen(10)
    chain = run_chain(HMC(th, tau=1.0, n_steps=6), th.random_field(64, g), g, n_therm=60, n_meas=400)
    series = chain.obs
    plaq, q2 = gamma_analysis(series["plaquette"]), gamma_analysis(series["Q2"])
    assert within(plaq, exact_u1.plaquette(2.0, 8)) and plaq.err < 1.5e-3
    assert within(q2, exact_u1.q2(2.0, 8)) and q2.err < 0.04
    chi = gamma_analysis(series["chi_t"])
    assert within(chi, exact_u1.chi_t(2.0, 8))
    q = series["Q"]
    assert np.abs(q - np.round(q)).max() < 1e-8
    acceptance = chain.info["accepted"].mean()
    assert acceptance > 0.95


def test_hmc_2d_beta4_matches_exact_plaquette_and_q2(gen, within, run_chain):
    """L = 8, β = 4: the charge decorrelates slowly (τ_int(Q²) ≈ 10), still within 4σ over 64 chains."""
    th = U1((8, 8), 4.0)
    g = gen(3)
    series = run_chain(HMC(th, tau=2.0, n_steps=8), th.random_field(64, g), g, n_therm=60, n_meas=400).obs
    plaq, q2 = gamma_analysis(series["plaquette"]), gamma_analysis(series["Q2"])
    assert within(plaq, exact_u1.plaquette(4.0, 8)) and plaq.err < 1e-3
    assert within(q2, exact_u1.q2(4.0, 8)) and q2.err < 0.05
    assert q2.tau_int > 2  # topology is the slow mode
    q = series["Q"]
    assert np.abs(q - np.round(q)).max() < 1e-8


def test_hmc_4d_strong_coupling_plaquette(gen, run_chain):
    """D = 4, β = 0.5: ⟨cos θ_P⟩ = u + 8u⁵ du/dβ + O(u⁹), u = I_1/I_0 (the 6-plaquette cubes of the
    strong-coupling expansion: log Z / N_P = log I_0 + (4/3) u⁶ + …, with 4 cubes per site in 4D)."""
    beta = 0.5
    th = U1((4, 4, 4, 4), beta)
    g = gen(12)
    chain = run_chain(HMC(th, tau=1.0, n_steps=5), th.random_field(16, g), g, n_therm=20, n_meas=150)
    plaq = gamma_analysis(chain.obs["plaquette"])
    u = exact_u1.plaquette_infinite(beta)
    du = 1.0 - u / beta - u * u  # d(I_1/I_0)/dβ
    expansion = u + 8 * u**5 * du
    assert abs(plaq.mean - expansion) < 4 * plaq.err + 2e-4
    assert abs(plaq.mean - u) > 4 * plaq.err  # the cube correction is resolved
    assert chain.info["accepted"].mean() > 0.9
    assert math.isfinite(plaq.tau_int)

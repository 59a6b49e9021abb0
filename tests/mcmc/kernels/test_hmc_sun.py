"""HMC for SU(N) gauge theory: exactness against the 2D character expansion, reversibility, and
⟨e^{−ΔH}⟩ = 1 in 4D SU(3). Chains are batched; errors come from the Gamma method over (N, B) series."""

import math

import numpy as np
import pytest
import torch

from lattice.exact_sun import plaquette as exact_plaquette
from lattice.sun import algebra_coords, dagger, trace, unitarity_violation
from lattice.wilson import SUN
from mcmc.kernels.hmc import HMC, dynamics_for
from mcmc.kernels.integrators import integrate
from mcmc.kernels.lie import kinetic_energy, sun_drift, sun_dynamics
from observables.gamma import gamma_analysis


def test_dynamics_dispatch_and_momenta(gen):
    th = SUN((4, 4), 1.0, 3)
    dyn = dynamics_for(th)
    u = th.random_field(2, gen(0))
    p = dyn.momentum(u, gen(1))
    assert p.shape == u.shape and p.dtype == u.dtype
    assert torch.allclose(dagger(p), -p) and trace(p).abs().max() < 1e-13
    # K = −Σ tr P² = ½ Σ p_a²
    x = algebra_coords(p)
    assert torch.allclose(dyn.kinetic(p), 0.5 * (x * x).flatten(1).sum(1))
    assert torch.allclose(kinetic_energy(p), -trace(p @ p).real.flatten(1).sum(1))
    assert torch.equal(dyn.momentum(u, gen(1)), p)
    assert sun_dynamics(th).grad is not None


@pytest.mark.parametrize("n", [2, 3])
def test_plaquette_2d_matches_character_expansion(n, gen, run_chain):
    beta, shape = 2.0, (8, 8)
    th = SUN(shape, beta, n)
    kernel = HMC(th, tau=1.0, n_steps=3, integrator="omelyan")
    chain = run_chain(kernel, th.random_field(16, gen(10 + n)), gen(20 + n), n_therm=10, n_meas=60)
    res = gamma_analysis(chain.obs["plaquette"])
    exact = exact_plaquette(n, beta, shape)
    assert chain.info["accepted"].mean() > 0.8
    assert abs(res.mean - exact) < 4 * res.err, (res.mean, res.err, exact)
    assert res.err < 0.01


def test_finite_volume_2x2_su2(gen, run_chain):
    """On a 2×2 torus the exact plaquette differs from the infinite-volume one; HMC must see that."""
    beta, shape = 4.0, (2, 2)
    th = SUN(shape, beta, 2)
    kernel = HMC(th, tau=1.0, n_steps=3, integrator="omelyan")
    chain = run_chain(kernel, th.random_field(64, gen(30)), gen(31), n_therm=10, n_meas=100)
    res = gamma_analysis(chain.obs["plaquette"])
    exact = exact_plaquette(2, beta, shape)
    assert abs(res.mean - exact) < 4 * res.err, (res.mean, res.err, exact)
    assert abs(res.mean - exact_plaquette(2, beta)) > 4 * res.err


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_reversibility_su3_4d(integrator, gen):
    th = SUN((4, 4, 4, 4), 5.5, 3)
    u = th.random_field(1, gen(40))
    dyn = dynamics_for(th)
    p = dyn.momentum(u, gen(41))
    fwd = integrate(integrator, dyn, u, p, 0.1, 10)
    back = integrate(integrator, dyn, fwd.x, -fwd.p, 0.1, 10)
    assert (back.x - u).abs().max() < 1e-10
    assert (back.p + p).abs().max() < 1e-10
    assert max(unitarity_violation(fwd.x)) < 1e-12
    assert (fwd.x - u).abs().max() > 0.1   # the trajectory went somewhere


def test_energy_violation_is_second_order(gen):
    """Leapfrog at fixed τ: ΔH = O(ε²), so halving ε divides |ΔH| by ≈ 4 (checks force and kinetic term)."""
    th = SUN((2, 2, 2, 2), 4.0, 3)
    u = th.random_field(1, gen(50))
    dyn = dynamics_for(th)
    p = dyn.momentum(u, gen(51))

    def dh(n_steps):
        end = integrate("leapfrog", dyn, u, p, 0.5 / n_steps, n_steps)
        h0 = dyn.kinetic(p) + th.action(u)
        return float((dyn.kinetic(end.p) + th.action(end.x) - h0).abs())

    coarse, fine = dh(20), dh(40)
    assert 3.5 < coarse / fine < 4.5, (coarse, fine)


def test_exp_minus_dh_su3_4d(gen, run_chain):
    """In equilibrium ⟨e^{−ΔH}⟩ = 1 (Creutz); β = 2 thermalises from a Haar start in a few trajectories."""
    th = SUN((4, 4, 4, 4), 2.0, 3)
    kernel = HMC(th, tau=1.0, n_steps=6, integrator="leapfrog")   # ⟨ΔH⟩ ≈ 0.2: e^{−ΔH} stays well-behaved
    chain = run_chain(kernel, th.random_field(8, gen(60)), gen(61), n_therm=6, n_meas=18)
    dh, acc = chain.info["dH"], chain.info["accepted"]
    res = gamma_analysis(np.exp(-dh))
    assert abs(res.mean - 1.0) < 4 * res.err, (res.mean, res.err)
    dh_res = gamma_analysis(dh)
    assert dh_res.mean > 2 * dh_res.err      # ΔH is visibly non-zero, so the check has power
    assert 0.5 < acc.mean() < 1.0


def test_complex64_trajectory(gen):
    th = SUN((4, 4), 2.0, 3)
    kernel = HMC(th, tau=1.0, n_steps=4)
    u = th.random_field(4, gen(70), dtype=torch.float32)
    assert u.dtype == torch.complex64
    state, info = kernel.step(kernel.init(u), gen(71))
    assert state.x.dtype == torch.complex64 and info.dH.dtype == torch.float64
    assert math.isfinite(float(info.dH.abs().max())) and float(info.dH.abs().max()) < 1.0
    assert max(unitarity_violation(state.x)) < 1e-5


def test_complex64_drift_stays_on_the_group(gen):
    th = SUN((4, 4), 1.0, 3)
    u = th.random_field(2, gen(72), dtype=torch.float32)
    dyn = dynamics_for(th)
    for i in range(300):
        u = sun_drift(u, dyn.momentum(u, gen(73 + i)), 0.3)
    assert max(unitarity_violation(u)) < 2e-6

"""HMC samples the right distribution: ⟨e^{−ΔH}⟩ = 1, the exact free field, and an independent sampler.

Errors are Wolff Gamma-method errors (each chain a replica); tolerances are 4σ.
"""

import numpy as np
import pytest

from lattice.exact import FreeField
from lattice.scalar import Phi4
from mcmc.kernels.hmc import HMC
from observables.gamma import gamma_analysis


def test_exp_minus_dH_is_one(gen, within, run_chain):
    """⟨e^{−ΔH}⟩ = 1 (Creutz) at a coarse step size (acceptance ≈ 0.9), where e^{−ΔH} fluctuates visibly."""
    theory, g = Phi4((8, 8), -4.0, 8.0), gen(3)
    kernel = HMC(theory, tau=1.0, n_steps=5)
    dh = run_chain(kernel, theory.random_field(32, g), g, n_therm=100, n_meas=400).info["dH"]
    res = gamma_analysis(np.exp(-dh))
    assert res.err < 0.01  # resolving power: a bias of 4 per cent would show at 4σ
    assert within(res, 1.0), (res.mean, res.err)
    assert np.mean(dh) > 0  # ⟨ΔH⟩ ≥ 0 by Jensen


def test_free_field_matches_exact_fourier_values(gen, within, run_chain):
    theory, exact = Phi4((8, 8), 0.5, 0.0), FreeField((8, 8), 0.5)
    kernel, g = HMC(theory, tau=1.0, n_steps=8), gen(7)
    obs = run_chain(kernel, theory.random_field(32, g), g, n_therm=50, n_meas=600).obs
    for name, value in (("phi2", exact.phi2()), ("mag2", exact.mag2()), ("action", exact.action())):
        res = gamma_analysis(obs[name])
        assert res.err < 0.02 * value, (name, res.err)
        assert within(res, value), (name, res.mean, res.err, value)


def local_metropolis(shape, m2, lam, n_chains, n_sweeps, n_therm, seed, step=1.0, hits=3):
    """Independent reference: checkerboard multi-hit Metropolis in numpy on φ⁴ (B chains).

    Site-local action of φ_x with neighbours fixed: (2D + m²) φ² + λ φ⁴ − 2 φ Σ_μ (φ_{x+μ} + φ_{x−μ}).
    Returns ``{mag2, absmag}`` of shape ``(n_sweeps, B)``.
    """
    rng = np.random.default_rng(seed)
    dim = len(shape)
    phi = 0.25 * rng.standard_normal((n_chains, *shape))
    colour = np.indices(shape).sum(0) % 2
    v = phi[0].size
    out = {"mag2": [], "absmag": []}

    def local(f, nbr):
        return (2 * dim + m2) * f * f + lam * f**4 - 2 * f * nbr

    for sweep in range(n_therm + n_sweeps):
        for c in (0, 1):
            mask = colour == c
            nbr = sum(np.roll(phi, s, axis=1 + mu) for mu in range(dim) for s in (1, -1))
            for _ in range(hits):
                new = phi + step * rng.uniform(-1, 1, phi.shape)
                d_s = local(new, nbr) - local(phi, nbr)
                accept = (rng.random(phi.shape) < np.exp(-d_s)) & mask
                phi = np.where(accept, new, phi)
        if sweep >= n_therm:
            m = phi.reshape(n_chains, -1).sum(1)
            out["mag2"].append(m * m / v)
            out["absmag"].append(np.abs(m) / v)
    return {k: np.array(val) for k, val in out.items()}


@pytest.mark.slow
def test_interacting_hmc_agrees_with_local_metropolis(gen, run_chain):
    """L = 8, m² = −4, λ = 8: HMC and an independent local sampler agree on ⟨M²⟩/V and ⟨|M|⟩/V."""
    theory, g = Phi4((8, 8), -4.0, 8.0), gen(5)
    kernel = HMC(theory, tau=1.0, n_steps=10)
    obs = run_chain(kernel, theory.random_field(32, g), g, n_therm=200, n_meas=1500).obs
    ref = local_metropolis((8, 8), -4.0, 8.0, n_chains=64, n_sweeps=1500, n_therm=300, seed=6, step=0.7)
    for name in ("mag2", "absmag"):
        a, b = gamma_analysis(obs[name]), gamma_analysis(ref[name])
        sigma = np.hypot(a.err, b.err)
        assert sigma < 0.02 * abs(a.mean), (name, a.err, b.err)
        assert abs(a.mean - b.mean) < 4 * sigma, (name, a.mean, a.err, b.mean, b.err)

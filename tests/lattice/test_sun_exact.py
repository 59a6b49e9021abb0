"""The 2D SU(N) character expansion (lattice.exact_sun) against independent derivations.

* Weyl integration: for SU(N) the Haar integral of a class function is
  ∫ dU f(U) = 1/(N! (2π)^{N−1}) ∫ d^{N−1}θ |Δ(z)|² f(z),  z_j = e^{iθ_j}, Σ θ_j = 0,
  and χ_λ(z)^* |Δ(z)|² = conj(det z_i^{λ_j+N−j}) det z_i^{N−j} (Weyl character formula), so the
  coefficients c_λ = ∫ χ_λ^* e^{(β/N) Re tr U} and ∂_β c_λ = ∫ χ_λ^* (Re tr U/N) e^{…} are smooth
  periodic integrals on which the trapezoidal rule converges exponentially.
* SU(2) closed form c_j = I_{2j}(β) − I_{2j+2}(β) = 2(2j+1) I_{2j+1}(β)/β (from the Weyl integral with
  2 sin θ sin((2j+1)θ) = cos 2jθ − cos(2j+2)θ), and ⟨½ tr U_P⟩_∞ = I_2(β)/I_1(β).
* Small β: c_0 = 1 + (x²/2)⟨(Re tr U)²⟩ + (x³/6)⟨(Re tr U)³⟩ + …, x = β/N. With the Haar moments of
  tests/lattice/test_sun.py, ⟨(Re tr U)²⟩ = 1 for SU(2) but ½ for N ≥ 3, and ⟨(Re tr U)³⟩ = ¼ for SU(3)
  (0 otherwise); ⟨(Re tr U)⁴⟩ = ¾ for SU(3). Hence ⟨Re tr U_P/N⟩_∞ = ∂_β log c_0 is
      SU(2): β/4 − β³/96 + O(β⁵),   SU(3): β/18 + β²/216 + 0·β³ + O(β⁴),   SU(N ≥ 4): β/(2N²) + O(β³).
* Finite volume: on a 1 × 1 torus the plaquette is the commutator U_0 U_1 U_0† U_1† of two Haar matrices,
  so its expectation is a ratio of Haar averages, estimated here by Monte Carlo.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import iv

from lattice.exact_sun import (
    character_table,
    coefficients,
    dimension,
    irreps,
    plaquette,
    plaquette_from_table,
    su2_coefficients,
    su2_plaquette_infinite,
)
from lattice.wilson import SUN


def weyl_coefficient(lam, beta, m=48):
    """(c_λ, ∂_β c_λ) by the trapezoidal rule on an m^{N−1} grid of the maximal torus."""
    n = len(lam)
    theta = 2 * np.pi * np.arange(m) / m
    grids = np.meshgrid(*([theta] * (n - 1)), indexing="ij")
    angles = np.stack([*grids, -sum(grids)], axis=-1)               # (m,…,m, N)
    z = np.exp(1j * angles)
    delta = np.arange(n - 1, -1, -1)
    num = np.linalg.det(z[..., :, None] ** (np.asarray(lam) + delta)[None, :])
    vdm = np.linalg.det(z[..., :, None] ** delta[None, :])
    retr = z.real.sum(-1) / n
    weight = np.conj(num) * vdm * np.exp(beta * retr)
    norm = math.factorial(n) * m ** (n - 1)
    return weight.sum().real / norm, (weight * retr).sum().real / norm


@pytest.mark.parametrize("n,beta", [(2, 0.7), (2, 3.0), (3, 1.0), (3, 4.0)])
def test_coefficients_against_weyl_integration(n, beta):
    reps = irreps(n, 3)
    c, dlog_c = coefficients(reps, beta)
    c = c * math.exp(beta)
    for lam, ck, dk in zip(reps, c, dlog_c, strict=True):
        w, dw = weyl_coefficient(lam, beta)
        assert math.isclose(ck, w, rel_tol=1e-10), lam
        assert math.isclose(dk, dw / w, rel_tol=1e-9), lam


def test_su2_bessel_closed_form():
    for beta in (0.3, 2.0, 6.0):
        spins, c_closed = su2_coefficients(beta, j_max=6)
        reps = [(int(2 * j), 0) for j in spins]
        c_det, _ = coefficients(reps, beta)
        assert np.allclose(c_det, c_closed, rtol=1e-12, atol=0)
        direct = 2 * (2 * spins + 1) * iv(2 * spins + 1, beta) / beta * math.exp(-beta)
        assert np.allclose(c_closed, direct, rtol=1e-12)
        assert math.isclose(plaquette(2, beta), float(iv(2, beta) / iv(1, beta)), rel_tol=1e-12)
        assert math.isclose(su2_plaquette_infinite(beta), plaquette(2, beta), rel_tol=1e-12)


def test_dimensions():
    assert [dimension(lam) for lam in irreps(2, 3)] == [1, 2, 3, 4]
    su3 = {lam: dimension(lam) for lam in irreps(3, 2)}
    assert su3 == {(0, 0, 0): 1, (1, 0, 0): 3, (1, 1, 0): 3, (2, 0, 0): 6, (2, 1, 0): 8, (2, 2, 0): 6}
    assert dimension((1, 0, 0, 0)) == 4 and dimension((1, 1, 0, 0)) == 6 and dimension((2, 1, 1, 0)) == 15


def test_small_beta_expansions():
    beta = 0.04
    p2 = plaquette(2, beta)
    assert math.isclose((p2 - beta / 4) / (-(beta**3) / 96), 1.0, rel_tol=1e-2)
    beta = 0.02
    p3 = plaquette(3, beta)
    assert math.isclose((p3 - beta / 18) / (beta**2 / 216), 1.0, rel_tol=1e-2)
    p4 = plaquette(4, beta, max_row=8)
    assert abs(p4 - beta / 32) < 1e-3 * beta / 32


@pytest.mark.parametrize("n", [2, 3])
def test_truncation_and_volume_limits(n):
    for beta in (0.5, 5.0):
        small, default, large = (character_table(n, beta, k) for k in (14, 24, 28))
        # the default truncation λ_1 ≤ 24 is converged even on one plaquette (the slowest case)
        assert math.isclose(plaquette_from_table(default, 1), plaquette_from_table(large, 1), rel_tol=1e-13)
        for n_plaq in (4, 64):
            assert math.isclose(plaquette_from_table(small, n_plaq), plaquette_from_table(default, n_plaq),
                                rel_tol=1e-12)
        assert math.isclose(plaquette_from_table(default, 1600), plaquette_from_table(default, math.inf),
                            rel_tol=1e-12)
    # the finite torus is visibly different at small volume
    assert plaquette(n, 2.0, (2, 2)) - plaquette(n, 2.0) > 1e-4
    with pytest.raises(ValueError):
        plaquette(n, 2.0, (4, 4, 4))
    with pytest.raises(ValueError):
        character_table(n, 0.0)


@pytest.mark.parametrize("n", [2, 3])
def test_one_plaquette_torus_by_haar_reweighting(n):
    """⟨Re tr U_P/N⟩ on the 1×1 torus = E[R e^{βR}] / E[e^{βR}], R = Re tr(U_0 U_1 U_0† U_1†)/N, U Haar."""
    beta, samples = 2.0, 40000
    th = SUN((1, 1), beta, n)
    u = th.random_field(samples, torch.Generator().manual_seed(21 + n))
    r = th.observables(u)["plaquette"].numpy()
    w = np.exp(beta * (r - 1))
    est = (w * r).sum() / w.sum()
    err = np.std(w * (r - est), ddof=1) / (w.mean() * math.sqrt(samples))   # delta method for the ratio
    exact = plaquette(n, beta, (1, 1))
    assert abs(est - exact) < 4 * err, (est, err, exact)
    assert abs(exact - plaquette(n, beta)) > 10 * err   # the check resolves the finite-volume formula


def test_irreps_enumeration():
    reps = irreps(3, 4)
    assert reps[0] == (0, 0, 0) and len(reps) == len(set(reps)) == 15
    assert all(a >= b >= 0 and c == 0 for a, b, c in reps)
    expected = {(a, b, c, 0) for a, b, c in itertools.product(range(3), repeat=3) if a >= b >= c}
    assert set(irreps(4, 2)) == expected

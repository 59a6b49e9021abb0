"""The character-expansion solution of 2D U(1) against independent derivations.

* 1×1 and 2-plaquette tori in closed form (Σ_n I_n = e^β; Neumann's Σ_n I_n² = I_0(2β), also by quadrature);
* the 2×2 torus by brute-force integration over link angles on a grid (using ``U1.action`` itself);
* the 3×1 torus: the links reduce to three plaquette angles with one constraint; ⟨Q²⟩ = P(Q ≠ 0) by
  adaptive 2D quadrature;
* β = 0: Q is a sum of V uniform variables on (−½, ½] conditioned to be an integer (Irwin–Hall, exact
  rational arithmetic);
* V → ∞ and the small-β expansion; internal consistency of ⟨Q²⟩, P(Q) and ∂²_ϑ log Z(ϑ).
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import i0, i1

from lattice import exact_u1
from lattice.u1 import U1


def test_one_plaquette_torus():
    # U_P = U_0 U_1 U_0^* U_1^* = 1 identically: Z = e^β (Haar-normalised), ⟨cos⟩ = 1, Q = 0
    th = U1((1, 1), 0.9)
    x = th.random_field(16, torch.Generator().manual_seed(0))
    assert th.plaquettes(x).abs().max() < 1e-12
    for beta in (0.3, 0.9, 2.5):
        assert exact_u1.log_z(beta, (1, 1)) == pytest.approx(beta, abs=1e-12)
        assert exact_u1.plaquette(beta, (1, 1)) == pytest.approx(1.0, abs=1e-12)
    assert exact_u1.q2(0.9, (1, 1)) == 0.0


@pytest.mark.parametrize("beta", [0.4, 1.3, 3.0])
def test_two_plaquette_torus(beta):
    # 2×1 torus: θ_P(0) = θ_1(1) − θ_1(0) = −θ_P(1), so Z = ∫ dt/2π e^{2β cos t} = I_0(2β)
    direct, _ = integrate.quad(lambda t: math.exp(2 * beta * math.cos(t)) / (2 * math.pi), -math.pi, math.pi)
    assert exact_u1.log_z(beta, (2, 1)) == pytest.approx(math.log(direct), abs=1e-12)
    assert exact_u1.log_z(beta, (2, 1)) == pytest.approx(math.log(i0(2 * beta)), abs=1e-12)
    assert exact_u1.plaquette(beta, (1, 2)) == pytest.approx(i1(2 * beta) / i0(2 * beta), abs=1e-12)


def _grid_2x2(beta, m=14, batch=1 << 16):
    """Haar averages on the 2×2 torus by the trapezoid rule in the 5 link angles left after fixing a maximal
    tree (θ_0(0,0) = θ_1(0,0) = θ_1(1,0) = 0); exponentially accurate for the periodic, analytic integrand."""
    th = U1((2, 2), beta)
    angles = 2 * math.pi * torch.arange(m, dtype=torch.float64) / m
    free = torch.cartesian_prod(*[angles] * 5)  # (m^5, 5)
    z = plaq = 0.0
    for start in range(0, free.shape[0], batch):
        f = free[start:start + batch]
        x = torch.zeros((f.shape[0], 2, 2, 2), dtype=torch.float64)
        x[:, 0, 0, 1], x[:, 0, 1, 0], x[:, 0, 1, 1], x[:, 1, 0, 1], x[:, 1, 1, 1] = f.unbind(1)
        w = torch.exp(-th.action(x))
        z += w.sum().item()
        plaq += (w * th.observables(x)["plaquette"]).sum().item()
    return math.log(z / free.shape[0]), plaq / z


@pytest.mark.parametrize("beta", [0.7, 1.5])
def test_two_by_two_torus_by_link_integration(beta):
    log_z, plaq = _grid_2x2(beta)
    assert exact_u1.log_z(beta, (2, 2)) == pytest.approx(log_z, abs=1e-9)
    assert exact_u1.plaquette(beta, (2, 2)) == pytest.approx(plaq, abs=1e-9)


def test_three_plaquette_torus_reduces_to_plaquette_angles():
    # On the 3×1 torus θ_P(x) = θ_1(x+1) − θ_1(x): three angles that sum to zero, and Q from wrapped values
    th = U1((3, 1), 1.0)
    x = th.random_field(32, torch.Generator().manual_seed(1))
    t = x[:, 1, :, 0]
    assert torch.allclose(th.plaquettes(x)[:, 0, :, 0], torch.roll(t, -1, dims=1) - t, atol=1e-14)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.7])
def test_three_plaquette_torus_q2_by_quadrature(beta):
    """⟨Q²⟩ on V = 3: with φ_1, φ_2 ∈ (−π, π] and φ_3 = −φ_1 − φ_2 (mod 2π), Q = ±1 iff |φ_1 + φ_2| > π."""

    def weight(p2, p1):
        return math.exp(beta * (math.cos(p1) + math.cos(p2) + math.cos(p1 + p2)))

    z, _ = integrate.dblquad(weight, -math.pi, math.pi, -math.pi, math.pi, epsabs=1e-13, epsrel=1e-13)
    # |φ_1 + φ_2| > π: by symmetry twice the triangle φ_1 ∈ (0, π), φ_2 ∈ (π − φ_1, π)
    charged, _ = integrate.dblquad(weight, 0, math.pi, lambda p1: math.pi - p1, math.pi, epsabs=1e-13,
                                   epsrel=1e-13)
    assert exact_u1.q2(beta, (3, 1)) == pytest.approx(2 * charged / z, abs=1e-9)


def _irwin_hall_q2(v):
    """⟨Q²⟩ at β = 0: Q = Σ_P u_P, u_P uniform on (−½, ½], conditioned on Q ∈ ℤ. The density of the sum at
    Q is the Irwin–Hall density f_V(Q + V/2) = Σ_{k ≤ x} (−1)^k C(V, k) (x − k)^{V−1} / (V−1)!."""

    def density(x):
        return sum((-1) ** k * math.comb(v, k) * (x - k) ** (v - 1) for k in range(math.floor(x) + 1)
                   ) / math.factorial(v - 1)

    qs = range(-(v // 2) - 1, v // 2 + 2)
    half = Fraction(v, 2)
    p = {q: density(q + half) if 0 <= q + half <= v else Fraction(0) for q in qs}
    return sum(q * q * p[q] for q in qs) / sum(p.values())


@pytest.mark.parametrize("shape", [(3, 1), (2, 2), (5, 1), (3, 3), (4, 4), (8, 8)])
def test_strong_coupling_limit_irwin_hall(shape):
    v = shape[0] * shape[1]
    assert exact_u1.q2(0.0, shape) == pytest.approx(float(_irwin_hall_q2(v)), abs=1e-12)
    assert exact_u1.q2(1e-9, shape) == pytest.approx(float(_irwin_hall_q2(v)), abs=1e-7)


def test_infinite_volume_limit():
    for beta in (0.5, 2.0, 4.0):

        def density(p, beta=beta):
            return (p / (2 * math.pi)) ** 2 * math.exp(beta * math.cos(p))

        assert exact_u1.plaquette(beta, 128) == pytest.approx(i1(beta) / i0(beta), abs=1e-12)
        assert exact_u1.plaquette_infinite(beta) == pytest.approx(i1(beta) / i0(beta), abs=1e-14)
        num, _ = integrate.quad(density, -math.pi, math.pi)
        chi = num / (2 * math.pi * i0(beta))
        assert exact_u1.chi_t_infinite(beta) == pytest.approx(chi, rel=1e-12)
        assert exact_u1.chi_t(beta, 64) == pytest.approx(chi, rel=1e-6)


def test_small_beta_expansion():
    # large V: ⟨cos θ_P⟩ = I_1/I_0 = β/2 − β³/16 + O(β⁵)
    beta = 1e-3
    assert exact_u1.plaquette(beta, 16) == pytest.approx(beta / 2 - beta**3 / 16, abs=1e-14)


def test_quadrature_reproduces_bessel_functions():
    n = np.arange(-12, 13)
    for beta in (0.5, 3.0, 8.0):
        mom = exact_u1.phi_moments(beta, n)
        assert np.allclose(mom["g0"], np.exp(exact_u1.log_bessel_ratio(n, beta)), atol=1e-14, rtol=1e-12)
        assert np.allclose(mom["m1"], -mom["m1"][::-1], atol=1e-15)


@pytest.mark.parametrize(("beta", "shape"), [(0.8, (4, 4)), (2.0, (8, 8)), (4.0, (6, 10))])
def test_q2_consistency(beta, shape):
    q2 = exact_u1.q2(beta, shape)
    charges, probs = exact_u1.charge_distribution(beta, shape)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert probs.min() > -1e-12
    p = dict(zip(charges.tolist(), probs.tolist(), strict=True))
    assert all(abs(p[q] - p[-q]) < 1e-14 for q in range(1, 20))
    assert (charges**2 * probs).sum() == pytest.approx(q2, rel=1e-10)
    h = 1e-3  # −∂²_ϑ log Z by a central difference, O(h²) ≈ 1e−7 relative
    log_z = [exact_u1.log_z(beta, shape, theta) for theta in (-h, 0.0, h)]
    fd = -(log_z[0] + log_z[2] - 2 * log_z[1]) / h**2
    assert fd == pytest.approx(q2, rel=1e-5)
    assert exact_u1.chi_t(beta, shape) == pytest.approx(q2 / (shape[0] * shape[1]))


def test_reference_values_l8():
    """Values used by the sampler tests (L = 8), pinned to catch accidental changes."""
    assert exact_u1.plaquette(2.0, 8) == pytest.approx(0.69777465801, abs=1e-10)
    assert exact_u1.q2(2.0, 8) == pytest.approx(1.23929891072, abs=1e-9)
    assert exact_u1.n_plaquettes(8) == 64 and exact_u1.n_plaquettes((6, 10)) == 60
    with pytest.raises(ValueError, match="2D torus"):
        exact_u1.n_plaquettes((4, 4, 4))

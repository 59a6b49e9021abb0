"""U(1) Wilson theory: plaquettes, action, analytic force, gauge invariance and the 2D charge."""

import math

import pytest
import torch

from lattice.theories import theory_from_params
from lattice.topology import charge_2d, wrap_angle
from lattice.u1 import U1

SHAPES = [(4, 3), (3, 2, 4), (2, 3, 2, 3)]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_gauge(theory, n, seed):
    return (2 * torch.rand((n, *theory.shape), generator=gen(seed), dtype=torch.float64) - 1) * math.pi * 3


def test_basic_properties():
    th = U1((4, 6), 2.0)
    assert th.name == "u1" and th.dim == 2 and th.field_shape == (2, 4, 6) and th.volume == 24
    assert th.planes == ((0, 1),) and th.n_plaquettes == 24
    assert th.params() == {"name": "u1", "shape": [4, 6], "beta": 2.0}
    assert theory_from_params(th.params()) == th
    th4 = U1([2, 3, 4, 5], 1.0)
    assert th4.shape == (2, 3, 4, 5) and len(th4.planes) == 6 and th4.n_plaquettes == 6 * 120
    with pytest.raises(ValueError, match="D >= 2"):
        U1((8,), 1.0)
    with pytest.raises(ValueError, match="positive"):
        U1((8, 0), 1.0)


def test_plaquette_definition_by_hand():
    """θ_01(x) = θ_0(x) + θ_1(x+0̂) − θ_0(x+1̂) − θ_1(x), checked element by element on a 3×4 lattice."""
    th = U1((3, 4), 1.0)
    x = th.random_field(2, gen(1))
    plaq = th.plaquettes(x)
    assert plaq.shape == (2, 1, 3, 4)
    for a in range(3):
        for b in range(4):
            want = x[:, 0, a, b] + x[:, 1, (a + 1) % 3, b] - x[:, 0, a, (b + 1) % 4] - x[:, 1, a, b]
            assert torch.allclose(plaq[:, 0, a, b], want, atol=1e-14)
    assert torch.allclose(th.action(x), -torch.cos(plaq).sum((1, 2, 3)), atol=1e-12)


def test_plaquette_orientation_in_4d():
    th = U1((2, 3, 2, 3), 1.0)
    x = th.random_field(1, gen(2))
    plaq = th.plaquettes(x)
    assert plaq.shape == (1, 6, 2, 3, 2, 3)
    p = th.planes.index((1, 3))
    site = (1, 2, 0, 2)
    plus_mu = (1, 0, 0, 2)  # x + 1̂ (extent 3)
    plus_nu = (1, 2, 0, 0)  # x + 3̂ (extent 3)
    want = x[0, 1][site] + x[0, 3][plus_mu] - x[0, 1][plus_nu] - x[0, 3][site]
    assert torch.allclose(plaq[0, p][site], want, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_grad_action_matches_autograd(shape):
    th = U1(shape, 1.7)
    x = th.random_field(3, gen(3)).requires_grad_(True)
    (auto,) = torch.autograd.grad(th.action(x).sum(), x)
    assert torch.allclose(th.grad_action(x.detach()), auto, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_gauge_invariance(shape):
    th = U1(shape, 1.3)
    x = th.random_field(4, gen(4))
    y = th.gauge_transform(x, random_gauge(th, 4, 5))
    assert not torch.allclose(x, y)
    assert torch.allclose(th.action(y), th.action(x), atol=1e-10, rtol=0)
    px, py = th.plaquettes(x), th.plaquettes(y)
    assert torch.allclose(torch.cos(py), torch.cos(px), atol=1e-10)
    assert torch.allclose(torch.sin(py), torch.sin(px), atol=1e-10)
    assert torch.allclose(th.observables(y)["plaquette"], th.observables(x)["plaquette"], atol=1e-12)
    if th.dim == 2:
        assert torch.allclose(th.topological_charge(y), th.topological_charge(x), atol=1e-10)


def test_gauge_transform_composes():
    th = U1((4, 4), 1.0)
    x = th.random_field(2, gen(6))
    a, b = random_gauge(th, 2, 7), random_gauge(th, 2, 8)
    assert torch.allclose(th.gauge_transform(th.gauge_transform(x, a), b), th.gauge_transform(x, a + b),
                          atol=1e-12)


def test_wrap_angle():
    t = torch.tensor([math.pi, -math.pi, 3 * math.pi, 0.0, 0.5, -0.5, 2 * math.pi + 0.1, -7.0],
                     dtype=torch.float64)
    w = wrap_angle(t)
    assert torch.all(w > -math.pi) and torch.all(w <= math.pi)
    assert w[0] == math.pi and w[1] == math.pi and abs(w[2] - math.pi) < 1e-12
    assert torch.allclose(torch.cos(w), torch.cos(t)) and torch.allclose(torch.sin(w), torch.sin(t))
    assert torch.allclose(w[3:6], t[3:6]) and abs(w[6] - 0.1) < 1e-12


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (16, 4)])
def test_charge_is_integer_on_hot_configs(shape):
    th = U1(shape, 1.0)
    x = th.random_field(256, gen(9))
    q = th.topological_charge(x)
    assert torch.allclose(q, torch.round(q), atol=1e-8, rtol=0)
    assert q.abs().max() > 0  # hot configurations do carry charge
    obs = th.observables(x)
    assert set(obs) == {"plaquette", "Q", "Q2", "chi_t"}
    assert torch.allclose(obs["Q"], q) and torch.allclose(obs["Q2"], q * q)
    assert torch.allclose(obs["chi_t"], q * q / th.volume)
    assert all(v.shape == (256,) for v in obs.values())


@pytest.mark.parametrize("k", [-2, -1, 0, 1, 3])
def test_constant_field_strength_has_charge_k(k):
    """Links with every plaquette angle 2πk/V (a uniform 'instanton') carry Q = k."""
    l0, l1 = 6, 5
    v = l0 * l1
    th = U1((l0, l1), 1.0)
    x0 = torch.arange(l0, dtype=torch.float64)[:, None].expand(l0, l1)
    x1 = torch.arange(l1, dtype=torch.float64)[None, :].expand(l0, l1)
    theta1 = 2 * math.pi * k * x0 / v
    theta0 = torch.where(x0 == l0 - 1, -2 * math.pi * k * x1 / l1, torch.zeros_like(x0))
    x = torch.stack([theta0, theta1])[None]
    plaq = th.plaquettes(x)
    assert torch.allclose(torch.cos(plaq), torch.full_like(plaq, math.cos(2 * math.pi * k / v)), atol=1e-12)
    assert torch.allclose(torch.sin(plaq), torch.full_like(plaq, math.sin(2 * math.pi * k / v)), atol=1e-12)
    assert abs(th.topological_charge(x).item() - k) < 1e-10
    assert abs(charge_2d(plaq[:, 0]).item() - k) < 1e-10


def test_charge_only_in_2d_and_observables_in_4d():
    th = U1((2, 2, 2, 2), 1.0)
    x = th.random_field(3, gen(10))
    assert set(th.observables(x)) == {"plaquette"}
    with pytest.raises(ValueError, match="D = 2"):
        th.topological_charge(x)


def test_random_field_is_haar_and_reproducible():
    th = U1((8, 8), 1.0)
    a = th.random_field(64, gen(11))
    b = th.random_field(64, gen(11))
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == (64, 2, 8, 8)
    assert a.min() >= -math.pi and a.max() < math.pi
    assert abs(torch.cos(a).mean()) < 0.02 and abs(a.mean()) < 0.05
    assert th.random_field(2, gen(0), dtype=torch.float32).dtype == torch.float32


def test_cold_configuration():
    th = U1((4, 4, 4, 4), 2.5)
    x = torch.zeros((1, *th.field_shape), dtype=torch.float64)
    assert th.action(x).item() == pytest.approx(-2.5 * th.n_plaquettes)
    assert th.observables(x)["plaquette"].item() == pytest.approx(1.0)
    assert torch.count_nonzero(th.grad_action(x)) == 0


def test_exact_charge_distribution_is_the_2d_character_expansion():
    """The theory's exact P(Q) (drawn by the report) is a normalised, Q → −Q symmetric distribution equal
    to ``lattice.exact_u1.charge_distribution``; a 3D theory has none."""
    from lattice.exact_u1 import charge_distribution

    exact = U1((6, 6), 2.0).exact_charge_distribution()
    assert math.isclose(sum(exact.values()), 1.0, rel_tol=1e-12)
    assert all(math.isclose(exact[q], exact[-q], rel_tol=1e-9, abs_tol=1e-300) for q in range(1, 5))
    charges, probabilities = charge_distribution(2.0, (6, 6))
    assert exact[0] == float(probabilities[list(charges).index(0)])
    assert U1((4, 4, 4), 1.0).exact_charge_distribution() is None

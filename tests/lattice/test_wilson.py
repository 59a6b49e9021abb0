"""SU(N) Wilson action: parameters, gauge invariance, staples, and the analytic force against autograd."""

import math

import pytest
import torch

from lattice.sun import dagger, expm_su, gaussian_algebra, haar, project_algebra, trace, unitarity_violation
from lattice.theories import theory_from_params
from lattice.wilson import SUN, gauge_transform, plaquette_retrace, plaquettes, polyakov_loop, staples

CASES = [((4, 4), 2), ((4, 4), 3), ((3, 4), 4), ((2, 2, 2, 2), 2), ((2, 3, 2, 2), 3)]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_params_round_trip_and_shapes():
    th = SUN((4, 6), 2.5, 3)
    assert th.params() == {"name": "sun", "shape": [4, 6], "beta": 2.5, "N": 3}
    assert theory_from_params(th.params()) == th
    assert th.field_shape == (2, 4, 6, 3, 3) and th.volume == 24 and th.n_plaquettes == 24
    u = th.random_field(2, gen(0), dtype=torch.float64)
    assert u.shape == (2, *th.field_shape) and u.dtype == torch.complex128
    assert th.random_field(1, gen(0), dtype=torch.float32).dtype == torch.complex64
    with pytest.raises(ValueError):
        SUN((4,), 1.0, 2)
    with pytest.raises(ValueError):
        SUN((4, 4), 1.0, 1)


@pytest.mark.parametrize("shape,n", CASES)
def test_cold_field(shape, n):
    th = SUN(shape, 1.7, n)
    u = th.cold_field(2)
    assert torch.allclose(th.action(u), torch.full((2,), -1.7 * th.n_plaquettes, dtype=torch.float64))
    obs = th.observables(u)
    assert torch.allclose(obs["plaquette"], torch.ones(2, dtype=torch.float64))
    assert torch.allclose(obs["polyakov"], torch.ones(2, dtype=torch.float64))
    assert th.force(u).abs().max() < 1e-14


@pytest.mark.parametrize("shape,n", CASES)
def test_gauge_invariance(shape, n):
    th = SUN(shape, 2.0, n)
    u = th.random_field(3, gen(1))
    g = haar((3, *shape), n, gen(2))
    v = gauge_transform(u, g)
    assert max(unitarity_violation(v)) < 1e-12
    assert (th.action(v) - th.action(u)).abs().max() < 1e-10
    assert (polyakov_loop(v) - polyakov_loop(u)).abs().max() < 1e-12
    for name, value in th.observables(v).items():
        assert torch.allclose(value, th.observables(u)[name], atol=1e-12), name
    # the force transforms covariantly: F(gUg'†)_μ(x) = g(x) F_μ(x) g(x)†
    f, fv = th.force(u), th.force(v)
    assert (fv - g[:, None] @ f @ dagger(g[:, None])).abs().max() < 1e-12


@pytest.mark.parametrize("shape,n", CASES)
def test_plaquettes_and_staples(shape, n):
    th = SUN(shape, 1.0, n)
    u = th.random_field(2, gen(3))
    p = plaquettes(u)
    assert torch.allclose(trace(p).real, plaquette_retrace(u), atol=1e-12)
    # each plaquette holds 4 links, so Σ_{x,μ} Re tr(U A) = 4 Σ_P Re tr U_P
    lhs = trace(u @ staples(u)).real.flatten(1).sum(1)
    assert torch.allclose(lhs, 4 * plaquette_retrace(u).flatten(1).sum(1), atol=1e-10)
    assert torch.allclose(th.action(u), -(1.0 / n) * trace(p).real.flatten(1).sum(1), atol=1e-12)


def explicit_action_2d(u, beta):
    """S by an explicit loop over sites of a 2D lattice (reference for the vectorised code)."""
    n = u.shape[-1]
    l0, l1 = u.shape[2], u.shape[3]
    total = torch.zeros(u.shape[0], dtype=torch.float64)
    for x in range(l0):
        for y in range(l1):
            xp, yp = (x + 1) % l0, (y + 1) % l1
            up = u[:, 0, x, y] @ u[:, 1, xp, y] @ dagger(u[:, 0, x, yp]) @ dagger(u[:, 1, x, y])
            total += trace(up).real
    return -beta / n * total


def test_action_against_explicit_loop():
    th = SUN((3, 4), 2.3, 3)
    u = th.random_field(2, gen(4))
    assert torch.allclose(th.action(u), explicit_action_2d(u, 2.3), atol=1e-12)


@pytest.mark.parametrize("shape,n", CASES)
def test_force_against_autograd(shape, n):
    """dS/dt of S(e^{tX} U) at t = 0 equals Σ x_a ∂_a S = −2 Σ tr(X F), for random directions X."""
    th = SUN(shape, 1.9, n)
    u = th.random_field(2, gen(5))
    f = th.force(u)
    assert torch.allclose(project_algebra(f), f, atol=1e-14)
    for seed in range(3):
        x = gaussian_algebra(u.shape[:-2], n, gen(10 + seed))
        t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        s = th.action(u + t * (x @ u)).sum()      # first order of e^{tX} U
        (ds,) = torch.autograd.grad(s, t)
        predicted = (-2.0 * trace(x @ f)).real.sum()
        assert math.isclose(float(ds), float(predicted), rel_tol=1e-10, abs_tol=1e-10)


def test_force_against_finite_difference_of_exponential():
    th = SUN((2, 2, 2, 2), 5.0, 3)
    u = th.random_field(1, gen(6))
    x = gaussian_algebra(u.shape[:-2], 3, gen(7))
    h = 1e-5
    ds = (th.action(expm_su(h * x) @ u) - th.action(expm_su(-h * x) @ u)) / (2 * h)
    predicted = (-2.0 * trace(x @ th.force(u))).real.sum()
    assert math.isclose(float(ds), float(predicted), rel_tol=1e-7)


def test_polyakov_loop_of_constant_field():
    """U_0 = diag(e^{iα}, e^{−iα}) everywhere: the loop along direction 0 is tr/2 = cos(L_0 α)."""
    th = SUN((4, 3), 1.0, 2)
    alpha = 0.3
    u = th.cold_field(1)
    u[:, 0] = torch.diag(torch.tensor([complex(math.cos(alpha), math.sin(alpha)),
                                       complex(math.cos(alpha), -math.sin(alpha))], dtype=torch.complex128))
    assert torch.allclose(polyakov_loop(u), torch.tensor([math.cos(4 * alpha)], dtype=torch.complex128))
    assert math.isclose(float(th.observables(u)["polyakov"]), abs(math.cos(4 * alpha)))

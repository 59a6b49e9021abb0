"""Circle diffeomorphisms: identity at zero, inverses, log-dets against autograd, behaviour at 0 and 2π."""

import math

import pytest
import torch

from flows.circular import (
    CIRCULAR_TRANSFORMS,
    circular_spline_forward,
    ncp_forward,
    ncp_inverse,
    table_forward,
    table_inverse,
)

TWO_PI = 2 * math.pi
KINDS = ["ncp", "spline"]
EDGES = [0.0, 1e-300, 1e-15, 1e-12, 1e-7, TWO_PI - 1e-7, TWO_PI - 1e-12, TWO_PI - 4e-16, TWO_PI]



def circ_diff(a, b):
    """Distance on the circle between angles a and b."""
    d = torch.remainder(a - b, TWO_PI)
    return torch.minimum(d, TWO_PI - d)


def sample(kind, n_elem=500, size=3, seed=0, scale=1.5, dtype=torch.float64):
    fwd, inv, n_params = CIRCULAR_TRANSFORMS[kind]
    g = torch.Generator().manual_seed(seed)
    x = TWO_PI * torch.rand(n_elem, generator=g, dtype=dtype)
    x = torch.cat([x, torch.tensor(EDGES, dtype=dtype)])
    params = scale * torch.randn((x.shape[0], n_params(size)), generator=g, dtype=dtype)
    return fwd, inv, x, params


@pytest.mark.parametrize("kind", KINDS)
def test_zero_params_give_identity(kind):
    fwd, inv, x, params = sample(kind)
    y, logdet = fwd(x, torch.zeros_like(params))
    assert circ_diff(y, x).max() < 1e-13 and logdet.abs().max() < 1e-12
    x2, logdet2 = inv(x, torch.zeros_like(params))
    assert circ_diff(x2, x).max() < 1e-13 and logdet2.abs().max() < 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1, 4, 8])
def test_inverse_round_trip_including_ends(kind, size):
    fwd, inv, x, params = sample(kind, size=size, seed=size)
    y, logdet = fwd(x, params)
    assert torch.all((y >= 0) & (y <= TWO_PI))
    x2, logdet_inv = inv(y, params)
    assert torch.all((x2 >= 0) & (x2 <= TWO_PI))
    assert circ_diff(x2, x).max() < 1e-10
    assert torch.allclose(logdet_inv, -logdet, atol=1e-9, rtol=0)
    # and the other way round, from targets that include the ends
    y3, logdet3 = fwd(*inv(x, params)[:1], params)
    assert circ_diff(y3, x).max() < 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_logdet_matches_autograd_including_ends(kind):
    fwd, _, x, params = sample(kind, seed=7)
    x = x.clone().requires_grad_(True)
    y, logdet = fwd(x, params)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    assert torch.all(dydx > 0)
    assert torch.allclose(torch.log(dydx), logdet, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_logdet_matches_autograd_of_forward_at_root(kind):
    fwd, inv, x, params = sample(kind, seed=8)
    root, logdet_inv = inv(x, params)
    root = root.clone().requires_grad_(True)
    (dydx,) = torch.autograd.grad(fwd(root, params)[0].sum(), root)
    assert torch.allclose(-torch.log(dydx), logdet_inv, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_map_is_smooth_across_zero(kind):
    """A circle map: y(2π) ≡ y(0) and the slopes at both ends agree (C¹ on the circle)."""
    fwd, _, _, params = sample(kind, n_elem=0, seed=9)
    p = params[:1].expand(2, -1)
    ends = torch.tensor([0.0, TWO_PI], dtype=torch.float64)
    y, logdet = fwd(ends, p)
    assert circ_diff(y[0], y[1]) < 1e-12
    assert abs(logdet[0] - logdet[1]) < 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_degree_one_and_monotone(kind):
    """∫_0^{2π} dy/dx dx = 2π, and the lift of y is increasing."""
    fwd, _, _, params = sample(kind, n_elem=0, seed=10, size=5)
    n = 20001
    x = torch.linspace(0, TWO_PI, n, dtype=torch.float64)
    y, logdet = fwd(x, params[:1].expand(n, -1))
    slope = torch.exp(logdet)
    integral = torch.trapezoid(slope, x)
    assert integral.item() == pytest.approx(TWO_PI, rel=1e-5)  # trapezoid error
    steps = torch.remainder(y[1:] - y[:-1], TWO_PI)
    assert steps.max() < 0.1  # no step wraps backwards: the lift increases by 2π in total
    assert steps.sum().item() == pytest.approx(TWO_PI, rel=1e-9)


def test_spline_fixes_the_ends_and_ncp_shift_moves_them():
    _, _, x, params = sample("spline", n_elem=0, seed=11)
    y, _ = circular_spline_forward(torch.tensor([0.0, TWO_PI], dtype=torch.float64), params[:2])
    assert y[0] == 0.0 and y[1] == pytest.approx(TWO_PI, abs=1e-14)
    p = torch.zeros(1, 3, dtype=torch.float64)
    p[0, 0], p[0, 1] = 2.0, 1.0  # one component with α ≠ 1, centred at β = 1
    y, _ = ncp_forward(torch.tensor([1.0], dtype=torch.float64), p)
    assert y.item() == pytest.approx(1.0, abs=1e-14)  # the centre of a single NCP is a fixed point


def test_single_ncp_matches_closed_form():
    """One component with β = 0: y = 2 atan(α tan(x/2)), dy/dx = α sec²(x/2) / (1 + α² tan²(x/2))."""
    raw = torch.tensor([0.7], dtype=torch.float64)
    p = torch.cat([raw, torch.zeros(2, dtype=torch.float64)])[None].expand(5, -1)
    from flows.circular import MIN_SCALE, positive

    alpha = positive(raw, MIN_SCALE).item()
    x = torch.tensor([0.3, 1.0, 2.0, 2.5, 3.0], dtype=torch.float64)
    y, logdet = ncp_forward(x, p)
    t = torch.tan(x / 2)
    assert torch.allclose(y, 2 * torch.atan(alpha * t), atol=1e-14)
    assert torch.allclose(logdet, torch.log(alpha * (1 + t * t) / (1 + alpha**2 * t * t)), atol=1e-13)
    assert torch.allclose(ncp_inverse(y, p)[0], x, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_and_gradients_to_params(kind):
    fwd, inv, x, params = sample(kind, seed=12, dtype=torch.float32)
    params = params.clone().requires_grad_(True)
    y, logdet = fwd(x, params)
    assert y.dtype == torch.float32
    (y.sin().sum() + logdet.sum()).backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0
    p = params.detach()
    assert circ_diff(fwd(inv(y.detach(), p)[0], p)[0], y.detach()).max() < 1e-5  # the well-conditioned way


@pytest.mark.parametrize("kind", KINDS)
def test_bad_parameter_count(kind):
    fwd = CIRCULAR_TRANSFORMS[kind][0]
    with pytest.raises(ValueError, match="3K"):
        fwd(torch.zeros(3, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64))


def test_table_map_inverse_logdet_and_ends():
    """The fixed piecewise-linear map (``table_forward``): inverse, log-slope against autograd, the ends."""
    g = torch.Generator().manual_seed(3)
    inner = torch.sort(TWO_PI * torch.rand(15, generator=g, dtype=torch.float64)).values
    ends = torch.tensor([0.0, TWO_PI], dtype=torch.float64)
    x_knots = torch.cat([ends[:1], inner, ends[1:]])
    y_knots = torch.linspace(0, TWO_PI, 17, dtype=torch.float64)
    x = torch.cat([TWO_PI * torch.rand(300, generator=g, dtype=torch.float64),
                   torch.tensor(EDGES, dtype=torch.float64)]).requires_grad_(True)
    y, logdet = table_forward(x, x_knots, y_knots)
    assert torch.all((y >= 0) & (y <= TWO_PI)) and y[-1] == TWO_PI and y[len(x) - len(EDGES)] == 0
    (dydx,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(torch.log(dydx), logdet, atol=1e-12, rtol=0)
    x2, logdet_inv = table_inverse(y.detach(), x_knots, y_knots)
    assert circ_diff(x2, x.detach()).max() < 1e-12
    assert torch.allclose(logdet_inv, -logdet, atol=1e-12, rtol=0)


def test_table_map_with_one_table_per_row():
    """Per-row knots ``(B, K + 1)`` against shared ``(K + 1,)`` ones: each row uses its own table."""
    g = torch.Generator().manual_seed(4)
    inner = torch.sort(TWO_PI * torch.rand(3, 7, generator=g, dtype=torch.float64), dim=1).values
    x_knots = torch.cat([torch.zeros(3, 1, dtype=torch.float64), inner,
                         torch.full((3, 1), TWO_PI, dtype=torch.float64)], dim=1)
    y_knots = torch.linspace(0, TWO_PI, 9, dtype=torch.float64)
    x = TWO_PI * torch.rand(3, 5, generator=g, dtype=torch.float64)
    y, logdet = table_forward(x, x_knots, y_knots)
    for row in range(3):
        y_row, logdet_row = table_forward(x[row], x_knots[row], y_knots)
        assert torch.equal(y[row], y_row) and torch.equal(logdet[row], logdet_row)
    x2, logdet_inv = table_inverse(y, x_knots, y_knots)
    assert torch.allclose(x2, x, atol=1e-12, rtol=0)
    assert torch.allclose(logdet_inv, -logdet, atol=1e-12, rtol=0)

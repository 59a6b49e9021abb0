"""Elementwise transforms: inverse ∘ forward = id, log-det = log|dy/dx|, identity at zero params."""

import pytest
import torch

from flows.transforms import (
    affine_forward,
    affine_inverse,
    spline_forward,
    spline_inverse,
    spline_n_params,
)

BOUND = 3.0
BINS = 6


def _spline_params(n, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, spline_n_params(BINS), generator=g, dtype=torch.float64)


def _spline_knots(params):
    """x- and y-knots ``(n, K + 1)`` of each element's spline."""
    from flows.transforms import _spline_geometry

    _, x_knots, _, y_knots, _ = _spline_geometry(params, BOUND)
    return x_knots, y_knots


def test_affine_roundtrip_and_logdet():
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(500, generator=g, dtype=torch.float64)
    params = torch.randn(500, 2, generator=g, dtype=torch.float64)
    y, ld = affine_forward(x, params)
    torch.testing.assert_close(y, x * params[:, 0].exp() + params[:, 1], rtol=0, atol=1e-14)
    xr, ld_inv = affine_inverse(y, params)
    assert (xr - x).abs().max() < 1e-12
    assert (ld + ld_inv).abs().max() == 0


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_spline_roundtrip_inside_tails_and_edges(scale):
    n = 400
    params = _spline_params(n, scale)
    g = torch.Generator().manual_seed(2)
    x = torch.empty(n, dtype=torch.float64)
    x[:200] = (2 * torch.rand(200, generator=g, dtype=torch.float64) - 1) * BOUND  # inside
    x[200:300] = torch.sign(torch.randn(100, generator=g, dtype=torch.float64)) * (
        BOUND + 5 * torch.rand(100, generator=g, dtype=torch.float64)
    )  # tails
    x_knots, _ = _spline_knots(params)
    idx = torch.randint(0, BINS + 1, (100,), generator=g)
    x[300:] = x_knots[300:].gather(1, idx.unsqueeze(1)).squeeze(1)  # exactly on bin edges, ±bound included
    y, ld = spline_forward(x, params, BOUND)
    xr, ld_inv = spline_inverse(y, params, BOUND)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert (xr - x).abs().max() < 1e-10
    assert (ld + ld_inv).abs().max() < 1e-10
    # tails are the identity with zero log-det
    assert torch.equal(y[200:300], x[200:300]) and torch.equal(
        ld[200:300], torch.zeros(100, dtype=torch.float64)
    )


def test_spline_knots_map_to_knots_and_monotone():
    params = _spline_params(50, 1.5, seed=3)
    x_knots, y_knots = _spline_knots(params)
    y, _ = spline_forward(x_knots, params.unsqueeze(1).expand(-1, BINS + 1, -1), BOUND)
    assert (y - y_knots).abs().max() < 1e-12
    grid = torch.linspace(-BOUND - 1, BOUND + 1, 2001, dtype=torch.float64).expand(50, -1)
    y_grid, _ = spline_forward(grid, params.unsqueeze(1).expand(-1, 2001, -1), BOUND)
    assert (y_grid.diff(dim=1) > 0).all()


def test_spline_logdet_matches_autograd():
    params = _spline_params(300, 1.0, seed=4)
    x = torch.linspace(-BOUND - 0.5, BOUND + 0.5, 300, dtype=torch.float64).requires_grad_()
    y, ld = spline_forward(x, params, BOUND)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    assert (dydx.log() - ld).abs().max() < 1e-10
    yy = y.detach().requires_grad_()
    x2, ld_inv = spline_inverse(yy, params, BOUND)
    (dxdy,) = torch.autograd.grad(x2.sum(), yy)
    assert (dxdy.log() - ld_inv).abs().max() < 1e-9


def test_zero_params_are_identity():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    for fwd, p in ((affine_forward, 2), (spline_forward, spline_n_params(BINS))):
        y, ld = fwd(x, torch.zeros(101, p, dtype=torch.float64))
        assert (y - x).abs().max() < 1e-12 and ld.abs().max() < 1e-12


def test_spline_gradients_finite_in_tails():
    params = _spline_params(4, 1.0, seed=5).requires_grad_()
    x = torch.tensor([-10.0, -BOUND, BOUND, 10.0], dtype=torch.float64, requires_grad=True)
    y, ld = spline_forward(x, params, BOUND)
    (y.sum() + ld.sum()).backward()
    assert torch.isfinite(params.grad).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 9), (7, 5, 8), (4, 1, 6, 6, 8)])
def test_outer_axis_cumsum_is_torch_cumsum_to_the_bit(shape, dtype):
    """The GPU path of the spline knots (a scan along the outermost axis) gives torch.cumsum's sums and
    gradients exactly: the same sequential additions in the same order."""
    from flows.transforms import cumsum_last, cumsum_outer

    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=dtype, requires_grad=True)
    w = torch.rand(shape, generator=g, dtype=dtype)
    want = torch.cumsum(x, -1)
    got = cumsum_outer(x)
    assert torch.equal(got, want) and torch.equal(cumsum_last(x), want)
    (g_want,) = torch.autograd.grad((want * w).sum(), x)
    (g_got,) = torch.autograd.grad((got * w).sum(), x)
    assert torch.equal(g_got, g_want)

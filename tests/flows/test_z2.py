"""Z₂-equivariant φ⁴ flows (``flow.z2``): f(−z) = −f(z) and q(−φ) = q(φ) for random weights, for
affine and spline couplings, with and without the Fourier layer; without the option they differ."""

import pytest
import torch

from flows.couplings import reflect_params
from flows.model import build_flow
from flows.transforms import TRANSFORMS
from lattice.scalar import Phi4

THEORY = Phi4((6, 6), -4.0, 8.0)


def _random_flow(coupling, z2, fourier=True):
    config = {"coupling": coupling, "n_layers": 4, "hidden": [8], "bins": 6, "z2": z2, "fourier": fourier}
    flow = build_flow(THEORY, config, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():  # away from the identity start, which is trivially equivariant
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


@pytest.mark.parametrize("coupling", ["affine", "spline"])
@pytest.mark.parametrize("fourier", [True, False])
def test_flow_is_z2_equivariant(coupling, fourier):
    flow = _random_flow(coupling, True, fourier)
    z = torch.randn(16, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_plus, logq_plus = flow.push(z)
    x_minus, logq_minus = flow.push(-z)
    torch.testing.assert_close(x_minus, -x_plus, rtol=0, atol=1e-12)
    torch.testing.assert_close(logq_minus, logq_plus, rtol=0, atol=1e-10)
    torch.testing.assert_close(flow.log_prob(-x_plus), logq_plus, rtol=0, atol=1e-9)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_without_the_option_the_flow_is_not_equivariant(coupling):
    flow = _random_flow(coupling, False)
    z = torch.randn(16, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert (flow.push(-z)[0] + flow.push(z)[0]).abs().max() > 1e-2


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_reflected_parameters_give_the_point_reflected_map(coupling):
    bins = 5
    width = 2 if coupling == "affine" else 3 * bins - 1
    params = torch.randn(50, width, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = 4 * torch.rand(50, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 2
    forward = TRANSFORMS[coupling][0]
    kwargs = {"bound": 3.0} if coupling == "spline" else {}
    y, logdet = forward(x, params, **kwargs)
    y_r, logdet_r = forward(-x, reflect_params(params, coupling, bins), **kwargs)
    torch.testing.assert_close(y_r, -y, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet_r, logdet, rtol=0, atol=1e-12)

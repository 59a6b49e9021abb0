"""Physics-informed start of U(1) flows: the Wilson quantile map and where it is installed."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import ive

from flows.circular import circular_spline_forward
from flows.gauge_u1 import U1GaugeCoupling, build_u1_flow, plaquette_2d
from flows.gauge_u1_init import wilson_cdf, wilson_spline_params
from lattice.u1 import U1

TWO_PI = 2 * math.pi


def wilson_logp(theta, beta):
    return beta * (torch.cos(theta) - 1) - math.log(TWO_PI * ive(0, beta))


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_cdf_matches_quadrature(beta):
    density = lambda t: math.exp(beta * (math.cos(t) - 1)) / (TWO_PI * ive(0, beta))  # noqa: E731
    for theta in (0.3, 1.7, math.pi, 5.0):
        assert abs(wilson_cdf(np.array(theta), beta) - quad(density, 0, theta)[0]) < 1e-10


@pytest.mark.parametrize(("beta", "kl_max"), [(2.0, 0.002), (6.0, 0.1)])
def test_spline_pushes_uniform_close_to_the_wilson_weight(beta, kl_max):
    """KL(q‖p_β) per plaquette of the initial spline, by Monte Carlo on 10⁵ uniform angles."""
    params = wilson_spline_params(beta, 16)
    u = TWO_PI * torch.rand(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta, logdet = circular_spline_forward(u, params.expand(len(u), -1))
    kl = (-math.log(TWO_PI) - logdet - wilson_logp(theta, beta)).mean().item()
    assert 0 <= kl < kl_max


def test_wilson_start_shapes_the_first_cycle_and_keeps_the_flow_exact():
    th = U1((8, 8), 4.0)
    config = {"n_layers": 8, "stride": 8, "link_directions": [0], "polyakov_layers": 2, "bins": 16,
              "init": "wilson", "hidden": [4]}
    flow = build_u1_flow(th, config, dtype=torch.float64)
    couplings = [layer for layer in flow.layers if isinstance(layer, U1GaugeCoupling)]
    started = [bool(layer.net.net[-1].bias.abs().max() > 0) for layer in couplings]
    assert started == [True] * 7 + [False]  # the cycle's last layer has shaped passive rows: identity
    x, logq = flow.sample(512, torch.Generator().manual_seed(1))
    assert torch.allclose(flow.log_prob(x), logq, atol=1e-9, rtol=0)
    plaq = torch.cos(plaquette_2d(x))
    exact = ive(1, 4.0) / ive(0, 4.0)  # ⟨cos θ_P⟩ of the single-plaquette weight
    assert abs(plaq[:, :, 2:7].mean().item() - exact) < 0.02  # rows shaped with fresh passive rows
    assert plaq.mean().item() > 0.5  # Haar would give 0
    with pytest.raises(ValueError, match="init"):
        build_u1_flow(th, {"coupling": "ncp", "init": "wilson"})

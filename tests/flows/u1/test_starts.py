"""Physics-informed start of U(1) flows: the Wilson quantile map and where it is installed."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import ive

from flows.u1.flow import U1GaugeCoupling, build_u1_flow, plaquette_2d
from flows.u1.starts import ConditionalTable, conditional_table, wilson_cdf, wilson_table
from lattice.u1 import U1

TWO_PI = 2 * math.pi


def wilson_logp(theta, beta):
    return beta * (torch.cos(theta) - 1) - math.log(TWO_PI * ive(0, beta))


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_cdf_matches_quadrature(beta):
    density = lambda t: math.exp(beta * (math.cos(t) - 1)) / (TWO_PI * ive(0, beta))  # noqa: E731
    for theta in (0.3, 1.7, math.pi, 5.0):
        assert abs(wilson_cdf(np.array(theta), beta) - quad(density, 0, theta)[0]) < 1e-10


@pytest.mark.parametrize(("beta", "kl_max"), [(2.0, 2e-4), (6.0, 5e-4), (10.0, 1e-3)])
def test_table_pushes_uniform_close_to_the_wilson_weight(beta, kl_max):
    """KL(q‖p_β) per plaquette of the fixed quantile table, exactly, by quadrature over its bins: the
    table's output density is piecewise constant, q = Δu_k / (2π Δθ_k) on bin k."""
    u_knots, theta_knots = (k.numpy() for k in wilson_table(beta))
    q = np.diff(u_knots) / (TWO_PI * np.diff(theta_knots))
    kl = 0.0
    for k in range(len(q)):
        logp = lambda t: beta * (math.cos(t) - 1) - math.log(TWO_PI * ive(0, beta))  # noqa: E731
        kl += quad(lambda t: q[k] * (math.log(q[k]) - logp(t)), theta_knots[k], theta_knots[k + 1])[0]  # noqa: B023
    assert 0 <= kl < kl_max
    # the floor: no bin of u narrower than ε Δθ, so float32 still resolves the table
    assert np.diff(u_knots).min() >= 0.99e-4 * np.diff(theta_knots).min()


def test_wilson_start_shapes_the_first_cycle_and_keeps_the_flow_exact():
    th = U1((8, 8), 4.0)
    for coupling in ("spline", "ncp"):
        config = {"n_layers": 8, "stride": 8, "link_directions": [0], "polyakov_layers": 2, "bins": 16,
                  "init": "wilson", "hidden": [4], "coupling": coupling}
        flow = build_u1_flow(th, config, dtype=torch.float64)
        couplings = [layer for layer in flow.layers if isinstance(layer, U1GaugeCoupling)]
        started = [layer.base is not None for layer in couplings]
        assert started == [True] * 7 + [False]  # the cycle's last layer has shaped passive rows: identity
        x, logq = flow.sample(512, torch.Generator().manual_seed(1))
        assert torch.allclose(flow.log_prob(x), logq, atol=1e-9, rtol=0)
        plaq = torch.cos(plaquette_2d(x))
        exact = ive(1, 4.0) / ive(0, 4.0)  # ⟨cos θ_P⟩ of the single-plaquette weight
        assert abs(plaq[:, :, 2:7].mean().item() - exact) < 0.02  # rows shaped with fresh passive rows
        assert plaq.mean().item() > 0.5  # Haar would give 0


@pytest.mark.parametrize(("beta", "n_rest"), [(6.0, 1), (6.0, 2), (2.0, 5)])
def test_conditional_table_is_the_density_given_the_loop(beta, n_rest):
    """The table's piecewise-constant density against c(θ | Σ) ∝ p_β(θ) g_{n}(Σ − θ), with g_n computed
    independently by repeated numerical convolution (FFT) of p_β: total variation below 1e-3."""
    grid = 1024
    theta = (np.arange(grid) + 0.5) * TWO_PI / grid
    p = np.exp(beta * (np.cos(theta) - 1))
    p /= p.sum()
    g = p.copy()
    for _ in range(n_rest - 1):
        g = np.real(np.fft.ifft(np.fft.fft(g) * np.fft.fft(p)))
    # g is the density of a sum of n_rest angles on the grid shifted by n_rest − 1 half-bins
    loops = torch.tensor([0.3, 2.0, math.pi, 5.5], dtype=torch.float64)
    u_knots, theta_knots = conditional_table(loops, ConditionalTable.build(beta, n_rest))
    for row, loop in enumerate(loops.tolist()):
        shift = (n_rest - 1) * 0.5 * TWO_PI / grid
        rest = np.interp(np.remainder(loop - theta - shift, TWO_PI), theta, g, period=TWO_PI)
        exact = p * rest
        exact /= exact.sum()
        table = np.diff(u_knots[row].numpy()) / TWO_PI  # mass per θ-bin of the table
        assert 0.5 * np.abs(table - exact).sum() < 1e-3
    assert torch.all(u_knots[:, 0] == 0) and torch.all(u_knots[:, -1] == TWO_PI)
    assert torch.all(torch.diff(u_knots, dim=1) > 0)

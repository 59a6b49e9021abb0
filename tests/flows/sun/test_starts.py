"""The Wilson start of the SU(N) spectral flows: the Haar quadrature on the stick cube, the fitted
one-loop spline, the shaping schedule (every plaquette the active loop of exactly one layer), and the
log-weight variance of a new flow against the Haar proposal's c² n_P Var(Re tr P)."""

import math

import pytest
import torch

from flows.masks import layer_masks, layer_schedule, planes
from flows.sun.config import SUNFlowConfig
from flows.sun.flow import build_sun_flow
from flows.sun.params import stick_params
from flows.sun.starts import (
    final_bias,
    haar_stick_grid,
    loop_log_weight,
    shaping_layers,
    wilson_loop_params,
)
from lattice.wilson import SUN


@pytest.mark.parametrize("n, points", [(2, 4000), (3, 200)])
def test_haar_stick_grid_reproduces_haar_moments(n, points):
    """⟨tr W⟩ = 0, ⟨|tr W|²⟩ = 1 and ⟨|tr W|⁴⟩ = 2 (N = 2, 3) under Haar measure."""
    theta, weight = haar_stick_grid(n, points)
    tr = torch.exp(1j * theta).sum(-1)
    assert abs(weight.sum().item() - 1.0) < 1e-12
    assert abs((weight * tr).sum().item()) < 1e-4
    assert abs((weight * tr.abs() ** 2).sum().item() - 1.0) < 1e-4
    assert abs((weight * tr.abs() ** 4).sum().item() - 2.0) < 1e-3


def residual_fraction(n, beta, bins=8, points=None, k_basis=1):
    """Var of the one-loop log-weight after the fitted spline, over its value for the identity map,
    on a finer grid than the fit's."""
    theta, weight = haar_stick_grid(n, points or {2: 9000, 3: 400}[n])
    params = stick_params(wilson_loop_params(n, beta, bins, k_basis), n, bins, k_basis)

    def variance(p):
        lw = loop_log_weight(theta, p, beta / n)
        mean = (weight * lw).sum()
        return (weight * (lw - mean) ** 2).sum().item()

    return variance(params) / variance(torch.zeros_like(params))


def test_wilson_loop_fit_su2_is_exact():
    """One stick: a 1D monotone spline can map Haar onto e^{(β/2) tr W} to quadrature accuracy."""
    assert residual_fraction(2, 2.0) < 1e-3


@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_wilson_loop_fit_su3_removes_most_of_the_log_weight(beta):
    """Two sticks, each moved by its own spline: the best such map leaves about 5-6 % of the one-loop
    log-weight variance (the rest needs a b₁-dependent spline for b₂)."""
    assert 0.03 < residual_fraction(3, beta) < 0.1


def test_wilson_loop_fit_su3_with_a_conditional_second_stick():
    """With b₂'s spline a function of b₁ (stick_basis K = 4) the fit leaves under 0.5 % of the one-loop
    log-weight variance at β = 1, where each stick on its own leaves 5 %."""
    assert residual_fraction(3, 1.0, k_basis=4) < 0.005


def test_wilson_start_rejects_large_n():
    with pytest.raises(ValueError, match="SU\\(2\\) and SU\\(3\\)"):
        wilson_loop_params(4, 1.0, 8)


@pytest.mark.parametrize("shape, n_layers, n_shaping, coverage", [
    ((4, 4, 4, 4), 32, 24, 1.0),        # two passes: every plaquette of all six planes once
    ((4, 4, 4, 4), 16, 16, 4 / 6),      # one pass: planes 01, 12, 23, 03
    ((8, 8), 8, 4, 1.0),                # 2D: the μ = 1 layers reuse the plane's plaquettes
    ((4, 4, 2, 2), 32, 16, 1.0),        # extent 2: offsets 2, 3 have no active sites
])
def test_shaping_layers_shape_each_plaquette_once(shape, n_layers, n_shaping, coverage):
    schedule = layer_schedule(len(shape), n_layers, "decreasing")
    first = shaping_layers(shape, schedule)
    assert sum(first) == n_shaping
    count = torch.zeros(len(planes(len(shape))), *shape, dtype=torch.int64)
    for (mu, nu, offset), fresh in zip(schedule, first, strict=True):
        if fresh:
            active, _ = layer_masks(shape, mu, nu, offset)
            count[planes(len(shape)).index((min(mu, nu), max(mu, nu)))] += active.long()
    assert count.max().item() == 1
    assert count.float().mean().item() == pytest.approx(coverage)


def log_weights(flow, theory, n, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x, logq = flow.as_float64().sample(n, gen)
        return -theory.action(x) - logq


def test_wilson_start_4d_is_exact_to_first_order():
    """On 4×4×2×2 SU(3) at β = 0.25 the Haar proposal's log-weight variance is
    (β/3)² · 6V · ½ = 1.33; a new 32-layer Wilson-start flow keeps less than a fifth of it (measured
    0.08), and leaves the identity start's variance (the Haar value, within sampling error) alone."""
    shape, beta = (4, 4, 2, 2), 0.25
    theory = SUN(shape, beta, 3)
    haar_var = (beta / 3) ** 2 * 6 * math.prod(shape) * 0.5
    config = {"n_layers": 32, "hidden": [4], "offset_order": "decreasing"}
    identity = build_sun_flow(theory, config, dtype=torch.float64)
    wilson = build_sun_flow(theory, {**config, "init": "wilson"}, dtype=torch.float64)
    var_identity = log_weights(identity, theory, 256, 1).var().item()
    var_wilson = log_weights(wilson, theory, 256, 1).var().item()
    assert abs(var_identity - haar_var) < 4 * haar_var * math.sqrt(2 / 255)    # χ² spread of a variance
    assert var_wilson < 0.2 * haar_var, (var_wilson, haar_var)


def test_conditional_sticks_lower_the_wilson_start_variance():
    """At β = 1 on 4×4×2×2 SU(3) the per-stick splines' misfit of the one-plaquette density dominates
    the Wilson start's log-weight variance (measured 1.60, of which the fit leaves 5 % of the Haar
    value 21.3); with stick 2's spline a function of stick 1 (stick_basis 2) it falls to 0.49. The
    bound, half, is 4σ of the ratio of two 256-sample variances away from 0.30."""
    theory = SUN((4, 4, 2, 2), 1.0, 3)
    config = {"n_layers": 32, "hidden": [4], "offset_order": "decreasing", "init": "wilson"}
    var = [log_weights(build_sun_flow(theory, {**config, "stick_basis": k}, dtype=torch.float64),
                       theory, 256, 1).var().item() for k in (1, 2)]
    assert var[1] < 0.5 * var[0], var


def test_init_key_is_validated_and_stored():
    """``init`` is stored in the config of a checkpoint; anything but identity or wilson is refused."""
    assert SUNFlowConfig().to_dict()["init"] == "identity"
    assert SUNFlowConfig(init="wilson").to_dict()["init"] == "wilson"
    for config in (SUNFlowConfig(), SUNFlowConfig(init="wilson", n_layers=8)):
        assert SUNFlowConfig.from_mapping(config.to_dict()) == config
    with pytest.raises(ValueError, match="flow.init"):
        SUNFlowConfig(init="strong")


@pytest.mark.parametrize("shape", [(8, 8), (4, 4, 4)])
def test_wilson_start_sets_the_shaping_biases_only(shape):
    """2D (Conv2d) and 3D (Conv3d) conditioners: each shaping layer's final bias holds the fitted spline,
    every other layer stays the identity (zero bias), and all final weights stay zero."""
    theory = SUN(shape, 1.0, 2)
    flow = build_sun_flow(theory, {"n_layers": 4 * len(shape), "hidden": [4], "init": "wilson"})
    schedule = [(layer.mu, layer.nu, layer.offset) for layer in flow.layers]
    expected = wilson_loop_params(2, 1.0, 8).float()
    for layer, fresh in zip(flow.layers, shaping_layers(shape, schedule), strict=True):
        bias = final_bias(layer.net)
        assert torch.equal(bias, expected if fresh else torch.zeros_like(expected))
        assert not layer.net.net[-1].weight.any()


def test_stick_basis_is_an_added_key():
    """stick_basis = 1 (the flows written before it existed) stays out of the stored config, so their
    checkpoints still match, and out of the card's physics hash; any other value is kept in both."""
    from mcmc.card_sections import FlowCard

    assert "stick_basis" not in SUNFlowConfig().to_dict()
    assert SUNFlowConfig(stick_basis=2).to_dict()["stick_basis"] == 2
    for config in (SUNFlowConfig(), SUNFlowConfig(stick_basis=2)):
        assert SUNFlowConfig.from_mapping(config.to_dict()) == config
    assert "stick_basis" not in FlowCard(n_layers=8).hashed()
    assert FlowCard(n_layers=8, stick_basis=2).hashed()["stick_basis"] == 2
    with pytest.raises(ValueError, match="stick_basis"):
        SUNFlowConfig(stick_basis=0)

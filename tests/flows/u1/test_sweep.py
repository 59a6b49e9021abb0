"""The sweep schedule of 2D U(1) flows: every plaquette but one shaped once, exactness, and the
volume-independent efficiency of the Wilson start."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy.special import ive

from flows.u1.flow import U1GaugeCoupling, build_u1_flow, site_masks
from flows.u1.sweep import sweep_schedule
from flows.validation import ess_fraction
from lattice import exact_u1
from lattice.u1 import U1
from mcmc.kernels.independence import IndependenceMetropolis
from observables.gamma import gamma_analysis

TWO_PI = 2 * math.pi


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(3, 3), (4, 6), (8, 8), (16, 16)])
def test_sweep_shapes_every_plaquette_but_one_once_with_unshaped_passives(shape):
    shaped = torch.zeros(shape, dtype=torch.int64)
    schedule = sweep_schedule(shape)
    assert len(schedule) == sum(shape) - 2
    for mu, active, region in schedule:
        masks = site_masks(active, mu)
        assert not torch.any(shaped.bool() & (masks["passive"] | masks["active"]))  # both still Haar
        if region is not None:  # the last row's plaquettes not yet shaped, active and passive among them
            last_row = torch.zeros(shape, dtype=torch.bool)
            last_row[:, 1] = True
            assert torch.equal(region, last_row & ~shaped.bool())
        shaped += masks["active"].int()
    assert shaped.sum() == math.prod(shape) - 1 and shaped[1, 1] == 0 and shaped.max() == 1
    with pytest.raises(ValueError, match="extents >= 3"):
        sweep_schedule((2, 8))


def perturbed_sweep_flow(th, seed):
    flow = build_u1_flow(th, {"sweep": True, "n_layers": 2, "init": "wilson", "hidden": [4], },
                         generator=gen(seed), dtype=torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(seed + 1), dtype=p.dtype))
    return flow


def test_sweep_flow_is_exact_gauge_equivariant_and_keeps_q_integer():
    th = U1((6, 8), 3.0)
    flow = perturbed_sweep_flow(th, 3)
    assert sum(isinstance(layer, U1GaugeCoupling) for layer in flow.layers) == 6 + 8 - 2 + 2
    z = flow.prior.sample(16, gen(4), torch.float64)
    x, logq = flow.push(z)
    assert torch.allclose(flow.log_prob(x), logq, atol=1e-9, rtol=0)
    alpha = TWO_PI * torch.rand((16, *th.shape), generator=gen(5), dtype=torch.float64)
    x_g, logq_g = flow.push(th.gauge_transform(z, alpha))
    diff = torch.remainder(x_g - th.gauge_transform(x, alpha) + math.pi, TWO_PI) - math.pi
    assert diff.abs().max() < 1e-10 and torch.allclose(logq_g, logq, atol=1e-10, rtol=0)
    q = th.topological_charge(x)
    assert torch.allclose(q, torch.round(q), atol=1e-8, rtol=0)


def one_row_ess(shape, beta):
    """ESS of the Wilson sweep: the proposal differs from the target only through the sum R of the last
    row's plaquettes (every other row's plaquettes and the last row's given R are exact), so with
    g_m(φ) = (1/2π) Σ_k r_k^m e^{ikφ}, r_k = I_k(β)/I_0(β), the proposal density of R is g_{V−L0}
    and the weight is w ∝ g_{L0}(R): ESS = (E_q w)² / E_q w², by quadrature on a fine grid."""
    extent_0, volume = shape[0], math.prod(shape)
    r = ive(np.arange(0, 200), beta) / ive(0, beta)
    phi = np.linspace(0, TWO_PI, 4096, endpoint=False)
    series = lambda m: 1 + 2 * (r[1:, None] ** m * np.cos(np.outer(np.arange(1, 200), phi))).sum(0)  # noqa: E731
    q, w = series(volume - extent_0), series(extent_0)
    return np.mean(q * w) ** 2 / (np.mean(q) * np.mean(q * w * w))


@pytest.mark.parametrize(("shape", "beta"), [((8, 8), 4.0), ((12, 12), 6.0)])
def test_wilson_sweep_ess_is_the_row_sum_value(shape, beta):
    """Untrained, the Wilson sweep reaches the ESS of :func:`one_row_ess` (0.83 at 8², β = 4; 0.83 at
    12², β = 6; 0.89 at 16², β = 6); checked within 4σ of 16 independent batch estimates (σ from
    their spread)."""
    th = U1(shape, beta)
    flow = build_u1_flow(th, {"sweep": True, "n_layers": 0, "init": "wilson"}).as_float64(torch.float32)
    estimates = []
    with torch.no_grad():
        for batch in range(16):
            x, logq = flow.sample(512, gen(100 + batch))
            estimates.append(ess_fraction(-th.action(x) - logq))
    expected = one_row_ess(shape, beta)
    mean, err = np.mean(estimates), np.std(estimates, ddof=1) / 4
    assert abs(mean - expected) < 4 * err and err < 0.01, (mean, err, expected)


def test_sweep_flow_mcmc_reproduces_exact_at_beta4():
    """Flow-MH with the untrained Wilson sweep on 8×8 at β = 4: plaquette and ⟨Q²⟩ within 4σ of the
    character expansion (``lattice.exact_u1``), σ from the Gamma method."""
    th, g = U1((8, 8), 4.0), gen(21)
    flow = build_u1_flow(th, {"sweep": True, "n_layers": 0, "init": "wilson"}).as_float64(torch.float32)
    kernel = IndependenceMetropolis(th, flow, batch=512)
    state = kernel.init_from_flow(64, g)
    series, accepted = {"plaquette": [], "Q2": []}, []
    for step in range(420):
        state, info = kernel.step(state, g)
        if step >= 20:
            accepted.append(info.accepted.double().mean().item())
            observed = th.observables(state.x)
            for name in series:
                series[name].append(observed[name])
    plaq = gamma_analysis(torch.stack(series["plaquette"]).numpy())
    q2 = gamma_analysis(torch.stack(series["Q2"]).numpy())
    assert abs(plaq.mean - exact_u1.plaquette(4.0, (8, 8))) < 4 * plaq.err and plaq.err < 0.002
    assert abs(q2.mean - exact_u1.q2(4.0, (8, 8))) < 4 * q2.err and q2.err < 0.03
    assert 0.6 < np.mean(accepted) < 0.95


def test_region_layer_logdet_matches_full_jacobian():
    """A one-site coupling that reads the region loop stays triangular: log|det| against autograd."""
    shape = (4, 4)
    th = U1(shape, 2.0)
    flow = perturbed_sweep_flow(th, 8)
    layer = [m for m in flow.layers if isinstance(m, U1GaugeCoupling) and m.region is not None][1]
    x = th.random_field(3, gen(9)).double()
    _, logdet = layer(x)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[b])  # noqa: B023
        sign, logabs = torch.linalg.slogdet(jac.reshape(32, 32))
        assert sign.item() == 1.0 and abs(logabs.item() - logdet[b].item()) < 1e-10


def test_cropped_conditioners_equal_the_full_lattice_ones():
    """The sweep couplings run their CNN on the window their active sites need (``conditioner_window``);
    with random conditioner weights the flow equals the one whose CNNs see the whole lattice."""
    theory = U1((7, 9), 2.0)
    config = {"sweep": True, "n_layers": 0, "hidden": [4], "kernel_size": 3, "init": "wilson", "loops": True,
              "positional": True}
    cropped = build_u1_flow(theory, config, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in cropped.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    full = copy.deepcopy(cropped)
    n_cropped = 0
    for layer in full.layers:
        n_cropped += int(getattr(layer, "window_active", None) is not None)
        layer.window_active = None
    assert n_cropped == len(cropped.layers)  # every sweep coupling is cropped at this size
    z = torch.rand(6, 2, 7, 9, generator=g, dtype=torch.float64) * 2 * math.pi
    (x_c, logq_c), (x_f, logq_f) = cropped.push(z), full.push(z)
    torch.testing.assert_close(x_c, x_f, rtol=0, atol=1e-12)
    torch.testing.assert_close(logq_c, logq_f, rtol=0, atol=1e-10)

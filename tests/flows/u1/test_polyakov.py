"""Polyakov-loop couplings of 2D U(1) flows: bijection, exact Jacobian, what they move, equivariance."""

import math

import pytest
import torch

from flows.nets import reset_parameters
from flows.u1.flow import U1FlowConfig, build_u1_flow, layer_schedule, offset_cycle, plaquette_2d, row_masks
from flows.u1.polyakov import U1PolyakovCoupling, polyakov_loops
from lattice.u1 import U1

TWO_PI = 2 * math.pi



def gen(seed):
    return torch.Generator().manual_seed(seed)


def angle_diff(a, b):
    return (torch.remainder(a - b + math.pi, TWO_PI) - math.pi).abs().max().item()


def perturbed(module, seed, scale=0.3):
    reset_parameters(module, gen(seed))
    g = gen(seed + 1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def layer(shape, parity, seed=0):
    return perturbed(U1PolyakovCoupling(shape, parity, U1FlowConfig(hidden=(4,))).double(), seed)


@pytest.mark.parametrize("parity", [0, 1])
def test_inverse_and_what_moves(parity):
    shape = (6, 4)
    coupling = layer(shape, parity)
    x = U1(shape, 1.0).random_field(8, gen(2))
    y, logdet = coupling(x)
    x2, logdet_inv = coupling.inverse(y)
    assert angle_diff(x2, x) < 1e-12 and torch.allclose(logdet_inv, -logdet, atol=1e-12, rtol=0)
    assert logdet.abs().max() > 1e-2
    assert torch.equal(y[:, 0], x[:, 0])  # μ = 0 links untouched
    moved = (y[:, 1] - x[:, 1]).abs().amax(dim=(0, 2)) > 0
    assert moved.tolist() == [c % 2 == parity for c in range(shape[0])]
    # each moved column shifts all its links equally: its Polyakov loop moves, its plaquettes by P shift/L1
    step = y[:, 1] - x[:, 1]
    assert torch.allclose(step, step[:, :, :1].expand_as(step), atol=1e-14)
    # the total of all plaquettes (2πQ before wrapping) and the frozen loops are unchanged
    frozen = torch.arange(shape[0]) % 2 != parity
    assert torch.allclose(polyakov_loops(y)[:, frozen], polyakov_loops(x)[:, frozen], atol=1e-14)
    assert torch.allclose(plaquette_2d(y).sum((1, 2)), plaquette_2d(x).sum((1, 2)), atol=1e-12)


def test_logdet_matches_full_jacobian():
    shape = (4, 3)
    coupling = layer(shape, 1, seed=4)
    x = U1(shape, 1.0).random_field(3, gen(5))
    _, logdet = coupling(x)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: coupling(v[None])[0][0], x[b])
        sign, logabs = torch.linalg.slogdet(jac.reshape(24, 24))
        assert sign.item() == 1.0 and abs(logabs.item() - logdet[b].item()) < 1e-11


def test_flow_with_polyakov_layers_is_exact_and_gauge_equivariant():
    th = U1((8, 6), 2.0)
    config = {"n_layers": 8, "polyakov_layers": 4, "link_directions": [0], "hidden": [4]}
    flow = perturbed(build_u1_flow(th, config, dtype=torch.float64), 7, scale=0.1)
    assert sum(isinstance(m, U1PolyakovCoupling) for m in flow.layers) == 4
    z = flow.prior.sample(8, gen(8), torch.float64)
    x, logq = flow.push(z)
    assert logq.std() > 0.5
    assert torch.allclose(flow.log_prob(x), logq, atol=1e-9, rtol=0)
    alpha = TWO_PI * torch.rand((8, *th.shape), generator=gen(9), dtype=torch.float64)
    x_g, logq_g = flow.push(th.gauge_transform(z, alpha))
    assert angle_diff(x_g, th.gauge_transform(x, alpha)) < 1e-10  # f(g·U) = g·f(U)
    assert torch.allclose(logq_g, logq, atol=1e-10, rtol=0)
    q = th.topological_charge(x)
    assert torch.allclose(q, torch.round(q), atol=1e-8, rtol=0)


def test_config_validation():
    with pytest.raises(ValueError, match="link_directions"):
        U1FlowConfig(link_directions=(2,))
    with pytest.raises(ValueError, match="polyakov_layers"):
        U1FlowConfig(polyakov_layers=-1)
    with pytest.raises(ValueError, match="even extent"):
        U1PolyakovCoupling((5, 4), 0, U1FlowConfig())
    cfg = U1FlowConfig.from_mapping({"link_directions": [0], "polyakov_layers": 2})
    assert cfg.link_directions == (0,) and U1FlowConfig.from_mapping(cfg.to_dict()) == cfg


@pytest.mark.parametrize("stride", [4, 6, 8])
def test_stride_masks_and_decreasing_cycle(stride):
    """Rows ≡ o (mod stride): one cycle of ``stride`` layers updates every μ = 0 link once, and in
    decreasing order every layer but the last finds its passive rows (o − 1) not yet shaped."""
    shape = (4, 2 * stride)
    cycle = offset_cycle("decreasing", stride)
    assert sorted(cycle) == list(range(stride)) and cycle[0] == 0
    updated = torch.zeros(shape, dtype=torch.int64)
    for k, (mu, off) in enumerate(layer_schedule(stride, "decreasing", (0,), stride)):
        assert mu == 0 and off == cycle[k]
        masks = row_masks(shape, 0, off, stride)
        updated += masks["active"].int()
        assert ((off - 1) % stride not in cycle[:k]) == (k < stride - 1)
    assert torch.all(updated == 1)


def test_strided_flow_is_exact_and_gauge_equivariant():
    th = U1((8, 8), 3.0)
    config = {"n_layers": 8, "stride": 8, "link_directions": [0], "polyakov_layers": 2, "hidden": [4]}
    flow = perturbed(build_u1_flow(th, config, dtype=torch.float64), 11, scale=0.1)
    z = flow.prior.sample(6, gen(12), torch.float64)
    x, logq = flow.push(z)
    assert logq.std() > 0.1 and torch.allclose(flow.log_prob(x), logq, atol=1e-9, rtol=0)
    alpha = TWO_PI * torch.rand((6, *th.shape), generator=gen(13), dtype=torch.float64)
    x_g, logq_g = flow.push(th.gauge_transform(z, alpha))
    assert angle_diff(x_g, th.gauge_transform(x, alpha)) < 1e-10
    assert torch.allclose(logq_g, logq, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="stride"):
        U1FlowConfig(stride=2)

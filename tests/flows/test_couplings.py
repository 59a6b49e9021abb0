"""Checkerboard couplings and flows: invertibility, exact log-det, log_prob = sampled logq, D = 1..4."""

import pytest
import torch

from flows.couplings import FourierScaling, MaskedCoupling
from flows.model import FlowConfig, build_flow
from flows.nets import ConvNet
from lattice.scalar import Phi4


def _perturbed_flow(shape, coupling, n_layers=2, scale=0.1, seed=0, **kw):
    """A float64 flow whose zero-initialised last convs are given small random values (not the identity)."""
    g = torch.Generator().manual_seed(seed)
    flow = build_flow(
        Phi4(shape, -4.0, 8.0),
        {"coupling": coupling, "n_layers": n_layers, "bins": 4, **kw},
        generator=g,
        dtype=torch.float64,
    )
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def _jacobian_logdet(flow, z):
    """log|det ∂x/∂z| of the full flow at one configuration ``z (*L)``, by autograd."""
    shape = z.shape

    def fn(flat):
        return flow.push(flat.reshape(1, *shape))[0].flatten()

    jac = torch.autograd.functional.jacobian(fn, z.flatten(), vectorize=True)
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("coupling", ["affine", "spline"])
@pytest.mark.parametrize("shape", [(6,), (4, 4), (2, 4, 2), (2, 2, 2, 2)])
def test_logdet_equals_autograd_jacobian(coupling, shape):
    flow = _perturbed_flow(shape, coupling, kernel_size=3, hidden=(4,))
    g = torch.Generator().manual_seed(7)
    z = 1.5 * torch.randn(shape, generator=g, dtype=torch.float64)
    logdet = -(flow.push(z.unsqueeze(0))[1] - flow.prior.log_prob(z.unsqueeze(0)))
    assert abs(logdet.item() - _jacobian_logdet(flow, z).item()) < 1e-10
    assert abs(logdet.item()) > 1e-3  # the test flow is not the identity


@pytest.mark.parametrize("coupling", ["affine", "spline"])
@pytest.mark.parametrize("shape", [(8,), (4, 6), (4, 4, 4)])
def test_layer_roundtrip_and_frozen_sites(coupling, shape):
    flow = _perturbed_flow(shape, coupling, n_layers=2)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, *shape, generator=g, dtype=torch.float64) * 2
    couplings = [layer for layer in flow.layers if isinstance(layer, MaskedCoupling)]
    assert len(couplings) == 2 and isinstance(flow.layers[0], FourierScaling)
    for layer in flow.layers:
        y, ld = layer(x)
        xr, ld_inv = layer.inverse(y)
        assert ld.shape == (5,)
        assert (xr - x).abs().max() < 1e-10 and (ld + ld_inv).abs().max() < 1e-10
        if not isinstance(layer, MaskedCoupling):
            x = y
            continue
        frozen = layer.frozen_mask.bool()
        assert torch.equal(y[:, frozen], x[:, frozen])
        assert not torch.equal(y[:, ~frozen], x[:, ~frozen])
    # consecutive layers transform complementary halves
    assert torch.equal(couplings[0].frozen_mask, 1 - couplings[1].frozen_mask)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_log_prob_equals_sampled_logq(coupling):
    flow = _perturbed_flow((4, 4), coupling, n_layers=4)
    x, logq = flow.sample(16, torch.Generator().manual_seed(9))
    assert (flow.log_prob(x) - logq).abs().max() < 1e-10


def test_new_flow_is_identity_and_float64_twin_is_exact():
    theory = Phi4((4, 4), -4.0, 8.0)
    flow = build_flow(theory, {"coupling": "spline", "n_layers": 2})
    z = flow.prior.sample(3, torch.Generator().manual_seed(1))
    x, logq = flow.push(z)
    assert (x - z).abs().max() < 1e-5 and (logq - flow.prior.log_prob(z)).abs().max() < 1e-4
    twin = _perturbed_flow((4, 4), "spline", n_layers=2).to(torch.float32).as_float64()
    assert twin.dtype == torch.float64 and not any(p.requires_grad for p in twin.parameters())
    x64, logq64 = twin.sample(8, torch.Generator().manual_seed(2))
    assert x64.dtype == torch.float64 and (twin.log_prob(x64) - logq64).abs().max() < 1e-11


def test_build_flow_is_deterministic_and_uses_no_global_rng():
    theory = Phi4((4, 4), -4.0, 8.0)
    state = torch.random.get_rng_state()
    a = build_flow(theory, {"n_layers": 2}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.random.get_rng_state())
    b = build_flow(theory, {"n_layers": 2}, generator=torch.Generator().manual_seed(3))
    c = build_flow(theory, {"n_layers": 2}, generator=torch.Generator().manual_seed(4))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_config_errors_are_clear():
    theory = Phi4((4, 4), -4.0, 8.0)
    with pytest.raises(ValueError, match="unknown flow key"):
        build_flow(theory, {"n_layer": 3})
    with pytest.raises(ValueError, match="kernel_size"):
        FlowConfig(kernel_size=4)
    with pytest.raises(ValueError, match="coupling"):
        FlowConfig(coupling="real-nvp")
    with pytest.raises(ValueError, match="D = 5"):
        build_flow(Phi4((2, 2, 2, 2, 2), -4.0, 8.0), {})


def test_convnet_is_translation_equivariant_4d():
    g = torch.Generator().manual_seed(5)
    net = ConvNet(4, 1, 2, (3,), kernel_size=3).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(2, 1, 3, 4, 2, 5, generator=g, dtype=torch.float64)
    shifted = torch.roll(x, shifts=(1, 2), dims=(3, 5))
    assert torch.allclose(net(shifted), torch.roll(net(x), shifts=(1, 2), dims=(3, 5)), atol=1e-12)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_float32_conditioners_keep_the_float64_density_exact(coupling):
    """``as_float64(conditioner_dtype=float32)``: float32 CNNs inside a float64 map. The proposal differs
    from the all-float64 one by rounding in the parameters only, and its own log q stays exact."""
    flow = _perturbed_flow((4, 6), coupling, n_layers=4).to(torch.float32)
    mixed = flow.as_float64(conditioner_dtype=torch.float32)
    full = flow.as_float64()
    convs = [m for m in mixed.modules() if isinstance(m, ConvNet)]
    assert convs and all(p.dtype == torch.float32 for c in convs for p in c.parameters())
    x, logq = mixed.sample(32, torch.Generator().manual_seed(3))
    assert x.dtype == torch.float64 and logq.dtype == torch.float64
    assert (mixed.log_prob(x) - logq).abs().max() < 1e-10
    xr, _ = mixed.layers[-1].inverse(mixed.layers[-1](x)[0])
    assert (xr - x).abs().max() < 1e-12
    # the same flow up to float32 rounding of the parameters, no more
    x_full, logq_full = full.sample(32, torch.Generator().manual_seed(3))
    assert 0 < (x_full - x).abs().max() < 1e-4 and (logq_full - logq).abs().max() < 1e-3

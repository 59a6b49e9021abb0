"""Conditioner networks: initial weights are drawn on the CPU, whatever device the generator or the
parameters live on, so one seed gives one flow everywhere."""

from types import SimpleNamespace

import torch

from flows.model import build_flow
from flows.nets import cpu_generator, reset_parameters
from lattice.scalar import Phi4


def _weights(flow):
    return {k: v.detach().cpu().clone() for k, v in flow.state_dict().items()}


def test_cpu_generator_is_the_generator_itself_on_the_cpu():
    g = torch.Generator().manual_seed(3)
    assert cpu_generator(g) is g


def test_a_device_generator_contributes_its_seed():
    fake = SimpleNamespace(device=torch.device("cuda", 0), initial_seed=lambda: 1234)
    drawn = torch.rand(5, generator=cpu_generator(fake))
    assert torch.equal(drawn, torch.rand(5, generator=torch.Generator().manual_seed(1234)))


def test_same_seed_same_weights_from_a_device_generator():
    """A generator seen as non-CPU (stand-in for CUDA) gives the weights of a CPU generator of its seed."""
    theory = Phi4((4, 4), m2=-4.0, lam=8.0)
    ref = build_flow(theory, {"n_layers": 2, "hidden": [4]}, generator=torch.Generator().manual_seed(7))
    fake = SimpleNamespace(device=torch.device("cuda", 0), initial_seed=lambda: 7)
    other = build_flow(theory, {"n_layers": 2, "hidden": [4]}, generator=fake)
    a, b = _weights(ref), _weights(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for v in a.values())  # the draw happened


def test_parameters_off_the_cpu_receive_cpu_draws():
    """Parameters on another device (``meta`` here, which has no data) are filled by a copy from the CPU
    draw, with no device mismatch in the generator."""
    theory = Phi4((4, 4), m2=-4.0, lam=8.0)
    flow = build_flow(theory, {"n_layers": 2, "hidden": [4]}).to("meta")
    reset_parameters(flow, torch.Generator().manual_seed(1))
    assert all(p.device.type == "meta" for p in flow.parameters())

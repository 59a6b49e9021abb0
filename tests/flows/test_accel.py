"""GPU training options (flows.accel): bf16 conditioners keep an exact float32 density, options are undone
after training, automatic choices depend on the device."""

import pytest
import torch

from flows.accel import AccelConfig, compile_available, compile_mode, compile_targets, training_accel
from flows.model import build_flow
from flows.nets import ConvNet
from lattice.scalar import Phi4


def _flow(seed=0):
    theory = Phi4((8, 8), m2=-4.0, lam=4.572)
    flow = build_flow(theory, {"n_layers": 2, "hidden": [8], "coupling": "spline"},
                      generator=torch.Generator().manual_seed(seed))
    for p in flow.parameters():  # leave the identity map: perturb every parameter
        p.data += 0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
    return flow


def test_bf16_conditioners_keep_an_exact_float32_density():
    """Under autocast the couplings' parameters come from bf16 convolutions, yet log q is float32 and
    equals the density computed through the inverse (the map is still an exact bijection)."""
    flow = _flow()
    with torch.no_grad(), training_accel(flow, AccelConfig(autocast="bf16"), torch.device("cpu")):
        x, logq = flow.sample(16, torch.Generator().manual_seed(1))
        assert x.dtype == logq.dtype == torch.float32
        assert torch.allclose(flow.log_prob(x), logq, rtol=0, atol=2e-4)
    with torch.no_grad():
        x_plain, logq_plain = flow.sample(16, torch.Generator().manual_seed(1))
    assert (logq_plain - logq).abs().max() > 0  # bf16 changed the conditioners' outputs
    assert (logq_plain - logq).abs().max() < 0.5


def test_options_are_undone_after_training():
    flow = _flow()
    params = list(flow.parameters())
    before = [p.detach().clone() for p in params]
    config = AccelConfig(autocast="bf16", channels_last=True)
    with training_accel(flow, config, torch.device("cpu")) as used:
        assert used.channels_last and used.autocast == "bf16"
        convs = [m for m in flow.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
        assert all(n.autocast_dtype == torch.bfloat16 for n in flow.modules() if isinstance(n, ConvNet))
    assert all(a is b for a, b in zip(params, flow.parameters(), strict=True))  # optimizers stay valid
    after = list(flow.parameters())
    assert all(torch.equal(a, b) and b.is_contiguous() for a, b in zip(before, after, strict=True))
    assert all(n.autocast_dtype is None for n in flow.modules() if isinstance(n, ConvNet))


def test_automatic_choices_depend_on_the_device():
    cpu = AccelConfig().resolved(torch.device("cpu"))
    assert (cpu.tf32, cpu.autocast, cpu.channels_last, cpu.compile) == (False, "off", False, "off")
    cuda = AccelConfig().resolved(torch.device("cuda"))
    assert (cuda.tf32, cuda.autocast, cuda.channels_last) == (True, "off", True)
    assert AccelConfig(tf32=False).resolved(torch.device("cuda")).tf32 is False


def test_unknown_autocast_is_refused():
    with pytest.raises(ValueError, match="autocast"):
        AccelConfig(autocast="fp8")


def test_card_section_reaches_the_config():
    from mcmc.card import Card

    card = Card.model_validate({"theory": {"name": "phi4", "shape": [4, 4], "m2": -4.0, "lam": 4.572},
                                "accel": {"autocast": "bf16"}})
    assert AccelConfig.from_mapping(card.accel.model_dump()) == AccelConfig(autocast="bf16")
    card = Card.model_validate({"theory": {"name": "phi4", "shape": [4, 4], "m2": -4.0, "lam": 4.572},
                                "accel": {"proposal_dtype": "float32"}})
    assert AccelConfig.from_mapping(card.accel.model_dump()).resolved(torch.device("cpu")).proposal_dtype == \
        "float32"
    with pytest.raises(ValueError, match="proposal_dtype"):
        AccelConfig(proposal_dtype="float16")
    with pytest.raises(Exception, match="autocast"):
        Card.model_validate({"theory": {"name": "phi4", "shape": [4, 4], "m2": -4.0, "lam": 4.572},
                             "accel": {"autocast": "fp16"}})


def test_compile_modes_keep_the_card_key_compatible():
    assert [compile_mode(v) for v in (False, None, True, "off", "nets", "flow")] == [
        "off", "off", "nets", "off", "nets", "flow"]
    with pytest.raises(ValueError, match="accel.compile"):
        AccelConfig(compile="everything")
    flow = _flow()
    assert compile_targets(flow, "nets") == [m for m in flow.modules() if isinstance(m, ConvNet)]
    assert compile_targets(flow, "flow") == list(flow.layers)[1:]  # not the FFT layer (no conditioner)
    from mcmc.card import Card

    theory = {"name": "phi4", "shape": [4, 4], "m2": -4.0, "lam": 4.572}
    for value in (True, False, "nets", "flow"):
        card = Card.model_validate({"theory": theory, "accel": {"compile": value}})
        assert AccelConfig.from_mapping(card.accel.model_dump()).resolved(torch.device("cpu")).compile == \
            compile_mode(value)
    with pytest.raises(Exception, match="compile"):
        Card.model_validate({"theory": theory, "accel": {"compile": "everything"}})


@pytest.mark.parametrize("mode", ["nets", "flow"])
def test_compiled_flow_computes_the_eager_function(mode):
    """Compiled (conditioners or whole layers) and eager: the same samples, log q and one training
    step's gradients up to float32 rounding, and the eager forward is back afterwards."""
    cpu = torch.device("cpu")
    if compile_available(cpu) is not None:
        pytest.skip(compile_available(cpu))
    flow = _flow()
    with torch.no_grad():
        x_ref, logq_ref = flow.sample(32, torch.Generator().manual_seed(1))
    theory = Phi4((8, 8), m2=-4.0, lam=4.572)

    def grads():
        flow.zero_grad(set_to_none=True)
        x, logq = flow.forward_with_logq(32, torch.Generator().manual_seed(2))
        (logq + theory.action(x)).mean().backward()
        return [p.grad.clone() for p in flow.parameters() if p.grad is not None]

    g_ref = grads()
    with training_accel(flow, AccelConfig(compile=mode), cpu) as used:
        assert used.compile == mode
        assert all(m._compiled_call_impl is not None for m in compile_targets(flow, mode))
        with torch.no_grad():
            x, logq = flow.sample(32, torch.Generator().manual_seed(1))
        g = grads()
    assert torch.allclose(x, x_ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(logq, logq_ref, rtol=1e-5, atol=1e-4)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(g, g_ref, strict=True))
    assert all(m._compiled_call_impl is None for m in compile_targets(flow, mode))

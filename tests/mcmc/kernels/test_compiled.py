"""The HMC fast path (mcmc.kernels.compiled): the fused trajectory is the eager trajectory up to rounding, so
the chain is the same Markov chain; compilation is guarded."""

import pytest
import torch

from lattice.scalar import Phi4
from lattice.u1 import U1
from lattice.wilson import SUN
from mcmc.kernels.compiled import CompiledHMC, compile_available, trajectory_fn
from mcmc.kernels.hmc import HMC

THEORIES = [Phi4((4, 4), m2=-4.0, lam=4.572), U1((4, 4), beta=2.0), SUN((4, 4), beta=2.0, N=2),
            SUN((2, 2, 2, 2), beta=5.0, N=3)]


def _start(theory, seed):
    g = torch.Generator().manual_seed(seed)
    if hasattr(theory, "random_field"):
        return theory.random_field(3, g, dtype=torch.float64), g
    return torch.randn((3, *theory.field_shape), generator=g, dtype=torch.float64), g


@pytest.mark.parametrize("theory", THEORIES, ids=lambda t: f"{t.name}{len(t.shape)}d")
def test_fused_form_run_eagerly_is_the_eager_trajectory(theory):
    kernel = HMC(theory, tau=0.5, n_steps=4)
    x, g = _start(theory, 1)
    from mcmc.kernels.hmc import dynamics_for

    p = dynamics_for(theory).momentum(x, g)
    want = kernel.trajectory(x, p)
    got = CompiledHMC(theory, tau=0.5, n_steps=4, compiled=False).trajectory(x, p)
    assert got.n_force == want.n_force
    for a, b in zip(got[:3], want[:3], strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-13


def test_same_seed_same_chain_as_hmc():
    """The fused form accepts and rejects exactly as HMC does from the same generator state."""
    theory = THEORIES[0]
    x, _ = _start(theory, 2)
    states = []
    for kernel in (HMC(theory, 1.0, 5), CompiledHMC(theory, 1.0, 5, compiled=False)):
        g = torch.Generator().manual_seed(9)
        state = kernel.init(x)
        accepted = []
        for _ in range(5):
            state, info = kernel.step(state, g)
            accepted.append(info.accepted.clone())
        states.append((state.x, torch.stack(accepted)))
    assert torch.equal(states[0][1], states[1][1])
    assert torch.allclose(states[0][0], states[1][0], rtol=0, atol=1e-12)


def test_compile_is_refused_for_devices_without_a_backend():
    assert compile_available(torch.device("meta")) is not None


def test_card_key_selects_the_fast_path():
    from mcmc.card import Card
    from mcmc.runtime import BuildContext
    from mcmc.setup import sampler_spec

    card = Card.model_validate({"theory": {"name": "phi4", "shape": [4, 4], "m2": -4.0, "lam": 4.572},
                                "hmc": {"compile": True}})
    built = sampler_spec(card).build(THEORIES[0], BuildContext(torch.device("cpu"), torch.float64))
    assert isinstance(built.kernel, CompiledHMC)


@pytest.mark.slow
@pytest.mark.skipif(compile_available(torch.device("cpu")) is not None,
                    reason=str(compile_available(torch.device("cpu"))))
@pytest.mark.parametrize("theory", [THEORIES[0], THEORIES[3]], ids=["phi4", "su3_4d"])
def test_compiled_on_cpu_matches_eager(theory):
    """torch.compile's CPU code (C++ from Inductor) gives the eager trajectory to rounding."""
    x, g = _start(theory, 3)
    from mcmc.kernels.hmc import dynamics_for

    p = dynamics_for(theory).momentum(x, g)
    want = HMC(theory, tau=0.5, n_steps=3).trajectory(x, p)
    got = trajectory_fn(theory, "omelyan", 0.5 / 3, 3, "cpu", True)(x, p, dynamics_for(theory).grad(x))
    for a, b in zip(got, want[:3], strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12

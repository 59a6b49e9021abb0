"""flows.proposal: the float32 proposal's log q is the density of the configuration it proposes (to float32
rounding), as the float64 map evaluates it; the sampler sees float64; the default is unchanged."""

import pytest
import torch

from flows.model import build_flow
from flows.proposal import Float32Proposal, proposal_flow
from lattice.scalar import Phi4

THEORY = Phi4((8, 8), m2=-4.0, lam=8.0)


def _flow():
    flow = build_flow(THEORY, {"n_layers": 4, "hidden": [8, 8]}, generator=torch.Generator().manual_seed(0))
    for p in flow.parameters():  # leave the identity map
        p.data += 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
    return flow


def test_float32_log_q_is_the_density_of_the_proposed_configuration():
    flow = _flow()
    exact = proposal_flow(flow, "float64")  # float64 map: log q exact to float64 rounding
    proposal = proposal_flow(flow, "float32")
    assert isinstance(proposal, Float32Proposal) and proposal.dtype == torch.float64
    x, logq = proposal.sample(256, torch.Generator().manual_seed(1))
    assert x.dtype == logq.dtype == torch.float64
    with torch.no_grad():
        reference = exact.log_prob(x)
        spread = (logq - logq.mean()).abs().max()
    error = (logq - reference).abs().max()
    assert error < 1e-3 and spread > 1.0  # rounding only, against an O(1) spread of log q
    assert torch.allclose(proposal.log_prob(x), reference, rtol=0, atol=1e-3)
    assert all(not p.requires_grad for p in proposal.parameters())


def test_default_is_the_float64_map_with_float32_conditioners():
    flow = _flow()
    default = proposal_flow(flow)
    assert default.dtype == torch.float64
    reference = flow.as_float64(conditioner_dtype=torch.float32)
    x, logq = default.sample(8, torch.Generator().manual_seed(2))
    x_ref, logq_ref = reference.sample(8, torch.Generator().manual_seed(2))
    assert torch.equal(x, x_ref) and torch.equal(logq, logq_ref)
    with pytest.raises(ValueError, match="proposal_dtype"):
        proposal_flow(flow, "float16")


def test_independence_metropolis_runs_on_float32_proposals():
    from mcmc.kernels.independence import IndependenceMetropolis

    kernel = IndependenceMetropolis(THEORY, proposal_flow(_flow(), "float32"), batch=16)
    g = torch.Generator().manual_seed(3)
    state = kernel.init_from_flow(4, g)
    for _ in range(20):
        state, info = kernel.step(state, g)
    assert state.x.dtype == state.logq.dtype == torch.float64
    assert torch.isfinite(state.logq).all() and torch.isfinite(state.logp).all()

"""Independence Metropolis on a flow: exactness, buffering, reweighting, and φ⁴ physics against HMC.

Errors are Wolff Gamma-method errors (each chain a replica); tolerances are 4σ.
"""

import math

import numpy as np
import torch

from flows.model import build_flow
from flows.train import TrainConfig, train_flow
from lattice.scalar import Phi4
from mcmc.kernels.hmc import HMC
from mcmc.kernels.independence import FlowChainState, IndependenceMetropolis
from mcmc.kernels.protocol import Kernel
from mcmc.reweighting import flow_proposals, reweighted_observables
from observables.gamma import gamma_analysis


class Gaussian:
    """S = Σ_x φ_x² / (2σ²): independent N(0, σ²) sites; ⟨φ²⟩ = σ² exactly."""

    def __init__(self, shape, sigma=1.0):
        self.field_shape, self.sigma = tuple(shape), sigma

    def action(self, phi):
        return (phi * phi).flatten(1).sum(1) / (2 * self.sigma**2)

    def observables(self, phi):
        return {"phi2": (phi * phi).flatten(1).mean(1)}


def identity_flow(shape):
    """A fresh affine flow: zero last convs make every layer exactly y = x·e⁰ + 0 = x."""
    return build_flow(
        Gaussian(shape), {"coupling": "affine", "n_layers": 2, "fourier": False}, dtype=torch.float64
    )


def test_exact_flow_is_always_accepted():
    """q = p exactly (identity flow on the N(0, 1) prior, S = Σφ²/2): acceptance is exactly 1."""
    theory = Gaussian((4, 4))
    kernel = IndependenceMetropolis(theory, identity_flow((4, 4)), batch=16)
    assert isinstance(kernel, Kernel)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(torch.randn(3, 4, 4, generator=gen, dtype=torch.float64))
    probs = []
    for _ in range(40):
        state, info = kernel.step(state, gen)
        probs.append(info.accept_prob)
        assert torch.isnan(info.dH).all() and torch.equal(info.logq, state.logq)
    probs = torch.stack(probs)
    assert probs.min() > 1 - 1e-12 and probs.shape == (40, 3)


def test_buffer_refills_in_batches_and_steps_index_it():
    theory = Gaussian((4,), sigma=0.7)
    kernel = IndependenceMetropolis(theory, identity_flow((4,)), batch=5)
    gen = torch.Generator().manual_seed(1)
    state = kernel.init_from_flow(2, gen)
    assert isinstance(state, FlowChainState) and state.buffer_x.shape[0] == 0
    state, _ = kernel.step(state, gen)
    assert state.buffer_x.shape == (5, 2, 4) and state.cursor == 1
    buffer = state.buffer_x
    for k in range(1, 5):
        state, info = kernel.step(state, gen)
        assert state.buffer_x is buffer and state.cursor == k + 1
        moved = info.accepted
        assert torch.equal(state.x[moved], buffer[k][moved])
        torch.testing.assert_close(info.proposal_logw, state.buffer_logp[k] - state.buffer_logq[k])
    state, _ = kernel.step(state, gen)
    assert state.buffer_x is not buffer and state.cursor == 1


def test_init_computes_logq_through_the_inverse():
    theory = Phi4((4, 4), -4.0, 8.0)
    flow = build_flow(theory, {"n_layers": 2, "hidden": [4]}, dtype=torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
    x, logq = flow.sample(4, torch.Generator().manual_seed(3))
    state = IndependenceMetropolis(theory, flow).init(x)
    assert (state.logq - logq).abs().max() < 1e-10
    torch.testing.assert_close(state.logp, -theory.action(x))


def test_mismatched_proposal_samples_the_target(run_chain):
    """N(0, 1) proposals for a N(0, σ² = 0.6) target: acceptance < 1, yet ⟨φ²⟩ = σ² (chain, reweighting)."""
    sigma2 = 0.6
    theory = Gaussian((2,), sigma=math.sqrt(sigma2))
    kernel = IndependenceMetropolis(theory, identity_flow((2,)), batch=512)
    gen = torch.Generator().manual_seed(4)
    state = kernel.init_from_flow(16, gen)
    chain = run_chain(kernel, state, gen, n_therm=0, n_meas=2000)
    phi2, accepted = chain.obs["phi2"], chain.info["accepted"]
    res = gamma_analysis(phi2[200:])
    assert 0.5 < accepted.mean() < 0.95
    assert res.err < 0.01 and abs(res.mean - sigma2) < 4 * res.err, (res.mean, res.err)
    rw, ess = reweighted_observables(theory, identity_flow((2,)), 20000, gen)
    assert 0.5 < ess < 0.95 and abs(rw["phi2"].mean - sigma2) < 4 * rw["phi2"].err
    values, logw = flow_proposals(theory, identity_flow((2,)), 10, gen, batch=4)
    assert values["phi2"].shape == (10,) and logw.shape == (10,)


def test_flow_metropolis_and_reweighting_agree_with_hmc(run_chain):
    """φ⁴ at L = 8, m² = −4, λ = 8: a briefly trained flow, corrected by independence Metropolis and by
    reweighting, reproduces HMC's ⟨M²⟩/V and ⟨|M|⟩/V within 4σ (both sides computed here)."""
    theory = Phi4((8, 8), -4.0, 8.0)
    gen = torch.Generator().manual_seed(5)
    flow = build_flow(theory, {"coupling": "spline", "n_layers": 4, "hidden": [8], "bins": 4}, generator=gen)
    cfg = TrainConfig(steps=150, batch_size=64, lr=5e-3)
    res = train_flow(flow, theory, cfg, gen, progress=False)
    assert res.n_skipped == 0

    kernel = IndependenceMetropolis(theory, flow.as_float64(), batch=256)
    chain = run_chain(kernel, kernel.init_from_flow(16, gen), gen, n_therm=64, n_meas=1024)
    obs = chain.obs
    assert np.mean(chain.info["accepted"]) > 0.15  # the flow has learned something

    rw, ess = reweighted_observables(theory, flow.as_float64(), 16384, gen)
    hmc_gen = torch.Generator().manual_seed(6)
    x = 0.3 * torch.randn(32, *theory.field_shape, generator=hmc_gen, dtype=torch.float64)
    hmc = run_chain(HMC(theory, 1.0, 8, "omelyan"), x, hmc_gen, n_therm=100, n_meas=400).obs
    for name in ("mag2", "absmag"):
        ref = gamma_analysis(hmc[name])
        mc = gamma_analysis(obs[name])
        sigma = math.hypot(ref.err, mc.err)
        assert abs(mc.mean - ref.mean) < 4 * sigma, (name, mc.mean, mc.err, ref.mean, ref.err)
        assert mc.err < 0.05 * ref.mean  # the comparison has resolving power
        sigma_rw = math.hypot(ref.err, rw[name].err)
        assert abs(rw[name].mean - ref.mean) < 4 * sigma_rw, (name, rw[name].mean, rw[name].err, ref.mean)

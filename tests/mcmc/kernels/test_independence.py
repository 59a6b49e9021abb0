"""Independence Metropolis on a flow: exactness, buffering, reweighting, and φ⁴ physics against HMC; the
proposal buffer: memory and time budgets, the one-pass accept scan (bit-identical to stepping),
observables and log-uniforms per proposal, compact checkpoints.

Errors are Wolff Gamma-method errors (each chain a replica); tolerances are 4σ.
"""

import math
import time
from dataclasses import replace

import numpy as np
import torch

from flows.model import build_flow
from flows.train import TrainConfig, train_flow
from lattice.scalar import Phi4
from mcmc.kernels.hmc import HMC
from mcmc.kernels.independence import (
    ACTIVATION_FACTOR,
    FlowChainState,
    IndependenceMetropolis,
    accept_scan,
)
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


class GaussianProposal:
    """q = N(0, s²) per site, with its exact log density; ``sleep`` seconds per proposal drawn."""

    dtype, device = torch.float64, torch.device("cpu")

    def __init__(self, shape, s=1.0, sleep=0.0):
        self.shape, self.s, self.sleep, self.calls = tuple(shape), s, sleep, []

    def log_prob(self, x):
        v = x.flatten(1)
        return -(v * v).sum(1) / (2 * self.s**2) - v.shape[1] * (0.5 * torch.log(torch.tensor(2 * torch.pi))
                                                                   + torch.log(torch.tensor(self.s)))

    def sample(self, n, generator):
        self.calls.append(n)
        if self.sleep:
            time.sleep(self.sleep * n)
        x = self.s * torch.randn((n, *self.shape), generator=generator, dtype=torch.float64)
        return x, self.log_prob(x)


def _kernel(**kw):
    return IndependenceMetropolis(Gaussian((3,), sigma=0.8), GaussianProposal((3,), s=1.3), **kw)


def test_steps_equal_single_steps_bit_for_bit():
    """The one-pass scan over a buffer gives exactly the states and records of stepping row by row."""
    kernel = _kernel(batch=64)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = kernel.init_from_flow(5, g1)
    s2 = kernel.init_from_flow(5, g2)
    for _ in range(10):  # the first scan starts in a partly used buffer
        s1, _ = kernel.step(s1, g1)
        s2, _ = kernel.step(s2, g2)
    for _ in range(3):
        xs, infos = [], []
        for _ in range(64 if s1.cursor >= s1.buffer_x.shape[0] else 64 - s1.cursor):
            s1, info = kernel.step(s1, g1)
            xs.append(s1.x)
            infos.append(info)
        s2, many, x_rows, logp_rows = kernel.steps(s2, g2)
        assert torch.equal(logp_rows[-1], s1.logp)
        assert torch.equal(torch.stack(xs), x_rows)
        for name in ("accepted", "accept_prob", "logq", "proposal_logw"):
            assert torch.equal(torch.stack([getattr(i, name) for i in infos]), getattr(many, name)), name
        assert torch.equal(torch.stack([i.proposal_obs["phi2"] for i in infos]), many.proposal_obs["phi2"])
        assert torch.equal(s1.x, s2.x) and torch.equal(s1.logp, s2.logp) and s1.cursor == s2.cursor == 64
    assert 0.2 < float(torch.stack([i.accepted for i in infos]).double().mean()) < 0.9


def test_accept_scan_matches_a_hand_trace():
    logw = torch.tensor([[0.0], [-1.0], [2.0], [1.0]], dtype=torch.float64)
    logu = torch.log(torch.tensor([[0.5], [0.5], [0.9], [0.3]], dtype=torch.float64))
    accepted, source, _ = accept_scan(logw, logu, torch.tensor([1.0], dtype=torch.float64))
    # log ratios: row 0: 0 − 1 = −1 < log 0.5 reject; row 1: −2 reject; row 2: +1 accept; row 3: 1 − 2 = −1
    # > log 0.3 = −1.2 accept
    assert accepted[:, 0].tolist() == [False, False, True, True]
    assert source[:, 0].tolist() == [-1, -1, 2, 3]


def _reference_scan(logw, logu, logw0):
    """The row-by-row definition, as ``step`` does it, on torch tensors."""
    cur, src, out = logw0.clone(), torch.full(logw0.shape, -1), []
    for k in range(logw.shape[0]):
        ratio = logw[k] - cur
        acc = logu[k] < ratio
        cur, src = torch.where(acc, logw[k], cur), torch.where(acc, k, src)
        out.append((acc, src.clone(), ratio))
    return tuple(torch.stack(c) for c in zip(*out, strict=True))


def test_accept_scan_equals_the_row_by_row_definition_bit_for_bit_nan_included():
    g = torch.Generator().manual_seed(3)
    logw = torch.randn(200, 7, generator=g, dtype=torch.float64) * 2
    logw[torch.rand(200, 7, generator=g) < 0.05] = float("nan")
    logu = torch.log(torch.rand(200, 7, generator=g, dtype=torch.float64))
    logw0 = torch.randn(7, generator=g, dtype=torch.float64)
    got, want = accept_scan(logw, logu, logw0), _reference_scan(logw, logu, logw0)
    assert got[0].dtype == torch.bool and got[1].dtype == torch.int64
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b) or torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))
    assert 0 < int(got[0].sum()) < logw.numel()


def test_proposal_observables_and_weights_are_those_of_the_proposal():
    kernel = _kernel(batch=8)
    gen = torch.Generator().manual_seed(1)
    state = kernel.init_from_flow(2, gen)
    state, info = kernel.step(state, gen)
    x = state.buffer_x[0]
    torch.testing.assert_close(info.proposal_obs["phi2"], (x * x).mean(1))
    torch.testing.assert_close(info.proposal_logw, kernel._logp(x) - kernel.flow.log_prob(x))


def test_memory_budget_bounds_the_rows():
    x = torch.zeros(4, 3, dtype=torch.float64)
    per_row = 4 * 3 * 8 * ACTIVATION_FACTOR
    assert _kernel(batch=1024, max_bytes=10 * per_row).max_rows(x) == 10
    assert _kernel(batch=6, max_bytes=10 * per_row).max_rows(x) == 6
    assert _kernel(batch=1024, max_bytes=1).max_rows(x) == 1  # never below one row
    kernel = _kernel(batch=1024, max_bytes=10 * per_row)
    gen = torch.Generator().manual_seed(0)
    state, _ = kernel.step(kernel.init_from_flow(4, gen), gen)
    assert state.buffer_x.shape[:2] == (10, 4) and state.rows == 10


def test_time_budget_sets_rows_from_one_timed_row():
    """5 ms per proposal, 4 chains: a row takes ≥ 20 ms, so a 0.2 s budget allows at most 8 rows."""
    flow = GaussianProposal((3,), s=1.3, sleep=0.005)
    kernel = IndependenceMetropolis(Gaussian((3,)), flow, batch=1024, refill_seconds=0.2)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init_from_flow(4, gen)
    state, _ = kernel.step(state, gen)
    assert state.buffer_x.shape[0] == 1 and 2 <= state.rows <= 8
    state, _ = kernel.step(state, gen)
    assert state.buffer_x.shape[0] == state.rows and flow.calls[-1] == 4 * state.rows


def test_compact_keeps_only_unused_rows_and_changes_nothing():
    kernel = _kernel(batch=16)
    g1 = torch.Generator().manual_seed(2)
    state = kernel.init_from_flow(3, g1)
    for _ in range(5):
        state, _ = kernel.step(state, g1)
    small = state.compact()
    assert small.buffer_x.shape[0] == 11 and small.cursor == 0
    assert small.buffer_x.untyped_storage().nbytes() < state.buffer_x.untyped_storage().nbytes()
    g2 = torch.Generator().set_state(g1.get_state())
    a, b = state, small
    for _ in range(20):
        a, ia = kernel.step(a, g1)
        b, ib = kernel.step(b, g2)
        assert torch.equal(a.x, b.x) and torch.equal(ia.accepted, ib.accepted)


def test_a_checkpoint_without_log_uniforms_refills():
    """A state saved by an older version (no log-uniforms) drops its unused proposals and refills."""
    kernel = _kernel(batch=8)
    gen = torch.Generator().manual_seed(4)
    state, _ = kernel.step(kernel.init_from_flow(2, gen), gen)
    old = replace(state, buffer_logu=None, buffer_obs=None)
    new, info = kernel.step(old, gen)
    assert new.cursor == 1 and new.buffer_logu.shape == (8, 2) and "phi2" in info.proposal_obs

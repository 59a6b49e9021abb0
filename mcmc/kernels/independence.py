"""Independence Metropolis with a normalizing-flow proposal, and flow reweighting.

Each chain proposes x' ~ q independently of its current x and accepts with

    P(accept) = min(1, w(x')/w(x)),   log w = log p̃ − log q,   p̃ = e^{−S}

(Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515), which leaves p = p̃/Z exactly invariant for any q
that is positive wherever p is, provided ``log q`` is the true density of the drawn x'. Proposals are
drawn in large batches: the state carries a buffer of ``batch`` pre-drawn proposals per chain, with
their ``logp`` and ``logq``, refilled by one flow call of ``n_chains × batch`` samples when used up, so a
step is an index into the buffer plus B uniforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flows.model import Flow
from mcmc.kernels.protocol import ChainState, StepInfo, metropolis_accept, nan_like, select
from observables.estimators import ReweightedResult, ess, reweighted_mean


@dataclass(frozen=True)
class FlowChainState(ChainState):
    """B chains and their proposal buffer.

    ``x (B, *L)``, ``logp = −S(x) (B,)`` and ``logq = log q(x) (B,)`` (float64) describe the chains;
    ``buffer_x (K, B, *L)``, ``buffer_logp (K, B)``, ``buffer_logq (K, B)`` hold K pre-drawn proposals
    per chain, of which ``buffer_x[cursor:]`` are still unused (``cursor == K``: empty). The buffer is
    shared by all chains, so select between two such states with :meth:`IndependenceMetropolis.step`,
    not with ``mcmc.kernels.protocol.select_state``.
    """

    logq: torch.Tensor
    buffer_x: torch.Tensor
    buffer_logp: torch.Tensor
    buffer_logq: torch.Tensor
    cursor: int


class IndependenceMetropolis:
    """Independence-Metropolis kernel for B chains on a flow proposal (float64 recommended).

    ``theory``: has ``action(x) -> (B,)``; ``flow``: has ``sample(n, generator) -> (x, logq)`` and
    ``log_prob(x)`` — pass ``Flow.as_float64()`` so that log q is exact to float64 rounding;
    ``batch``: proposals per chain drawn per refill.
    """

    def __init__(self, theory: Any, flow: Flow, batch: int = 1024) -> None:
        if batch < 1:
            raise ValueError(f"batch = {batch} must be positive")
        self.theory = theory
        self.flow = flow
        self.batch = int(batch)

    def _logp(self, x: torch.Tensor) -> torch.Tensor:
        return -self.theory.action(x).to(torch.float64)

    @torch.no_grad()
    def _empty_buffer(self, x: torch.Tensor) -> dict[str, Any]:
        return {
            "buffer_x": x.new_empty((0, *x.shape)),
            "buffer_logp": x.new_empty((0, x.shape[0]), dtype=torch.float64),
            "buffer_logq": x.new_empty((0, x.shape[0]), dtype=torch.float64),
            "cursor": 0,
        }

    @torch.no_grad()
    def init(self, x: torch.Tensor) -> FlowChainState:
        """Chains started at ``x (B, *L)``: computes logp and logq (via the flow inverse); empty buffer."""
        x = x.to(dtype=self.flow.dtype, device=self.flow.device)
        logq = self.flow.log_prob(x).to(torch.float64)
        return FlowChainState(x=x, logp=self._logp(x), logq=logq, **self._empty_buffer(x))

    @torch.no_grad()
    def init_from_flow(self, n_chains: int, generator: torch.Generator) -> FlowChainState:
        """``n_chains`` chains started at independent flow samples. Their distribution is q, not p, but
        close to p for a good flow, so a short thermalisation (a few times 1/acceptance) suffices."""
        x, logq = self.flow.sample(n_chains, generator)
        return FlowChainState(x=x, logp=self._logp(x), logq=logq.to(torch.float64), **self._empty_buffer(x))

    @torch.no_grad()
    def refill(self, state: FlowChainState, generator: torch.Generator) -> FlowChainState:
        """Draw ``n_chains × batch`` proposals in one flow call into a fresh buffer (cursor 0)."""
        n_chains = state.x.shape[0]
        x, logq = self.flow.sample(n_chains * self.batch, generator)
        logp = self._logp(x)
        return FlowChainState(
            x=state.x,
            logp=state.logp,
            logq=state.logq,
            buffer_x=x.reshape(self.batch, n_chains, *x.shape[1:]),
            buffer_logp=logp.reshape(self.batch, n_chains),
            buffer_logq=logq.to(torch.float64).reshape(self.batch, n_chains),
            cursor=0,
        )

    @torch.no_grad()
    def step(self, state: FlowChainState, generator: torch.Generator) -> tuple[FlowChainState, StepInfo]:
        """One independence-Metropolis update of every chain; refills the buffer first when it is used up."""
        if state.cursor >= state.buffer_x.shape[0]:
            state = self.refill(state, generator)
        k = state.cursor
        x_new, logp_new, logq_new = state.buffer_x[k], state.buffer_logp[k], state.buffer_logq[k]
        logw_new = logp_new - logq_new
        log_ratio = logw_new - (state.logp - state.logq)
        accepted, accept_prob = metropolis_accept(log_ratio, generator)
        new = FlowChainState(
            x=select(accepted, x_new, state.x),
            logp=torch.where(accepted, logp_new, state.logp),
            logq=torch.where(accepted, logq_new, state.logq),
            buffer_x=state.buffer_x,
            buffer_logp=state.buffer_logp,
            buffer_logq=state.buffer_logq,
            cursor=k + 1,
        )
        info = StepInfo(
            accepted=accepted,
            accept_prob=accept_prob,
            dH=nan_like(accept_prob),
            logq=new.logq.clone(),
            proposal_logw=logw_new.clone(),
        )
        return new, info


@torch.no_grad()
def flow_proposals(
    theory: Any, flow: Flow, n: int, generator: torch.Generator, batch: int = 4096
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` independent flow proposals, drawn ``batch`` at a time: their observables
    (``theory.observables(x)``, each ``(n,)``) and log weights ``log w = −S − log q`` ``(n,)``, as numpy."""
    values: dict[str, list[np.ndarray]] = {}
    logw: list[np.ndarray] = []
    done = 0
    while done < n:
        m = min(batch, n - done)
        x, logq = flow.sample(m, generator)
        for name, v in theory.observables(x).items():
            values.setdefault(name, []).append(v.to(torch.float64).cpu().numpy())
        logw.append((-theory.action(x).to(torch.float64) - logq.to(torch.float64)).cpu().numpy())
        done += m
    return {k: np.concatenate(v) for k, v in values.items()}, np.concatenate(logw)


def reweighted_observables(
    theory: Any, flow: Flow, n: int, generator: torch.Generator, batch: int = 4096, n_bins: int = 20
) -> tuple[dict[str, ReweightedResult], float]:
    """Self-normalised reweighting ⟨O⟩ ≈ Σ w O / Σ w over ``n`` flow proposals (no Markov chain).

    Returns ``{name: ReweightedResult(mean, err, ess, n)}`` (blocked-jackknife errors, from
    ``observables.estimators``) and the ESS per proposal (Σw)²/(N Σw²).
    """
    values, logw = flow_proposals(theory, flow, n, generator, batch)
    return {k: reweighted_mean(v, logw, n_bins=n_bins) for k, v in values.items()}, ess(logw)

"""Independence Metropolis with a normalizing-flow proposal, and flow reweighting.

Each chain proposes x' ~ q independently of its current x and accepts with

    P(accept) = min(1, w(x')/w(x)),   log w = log p̃ − log q,   p̃ = e^{−S}

(Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515), which leaves p = p̃/Z exactly invariant for any q
that is positive wherever p is, provided ``log q`` is the true density of the drawn x'.

The proposal buffer. Proposals are drawn in chunks of ``rows`` proposals per chain, one flow call of
``rows × B`` samples, together with everything a step needs: their ``logp`` and ``logq``, their
observables (``theory.observables``, for the all-proposal reweighted estimate) and the log-uniforms of
their accept tests. A step is then an index into the buffer, and a whole buffer can be accepted or
rejected in one pass (:func:`accept_scan`, bit-identical to stepping). ``rows`` is bounded three ways:

- ``batch`` (the card's ``sample.proposal_batch``): at most this many proposals per chain;
- a memory budget ``max_bytes``: ``rows × B × ACTIVATION_FACTOR × (bytes of one field)`` must fit;
- a time budget ``refill_seconds``: the first refill of a chain draws one row and is timed, and
  ``rows`` becomes the largest power of two whose refill stays within the budget. This keeps every
  refill short, so a stop request, read by the driver between updates, takes effect promptly.

Reproducibility. A refill draws its randomness row by row from the one generator, for each row the B
prior draws of its proposals and then their B uniforms, and pushes the concatenated prior draws through
the flow in one batched call (``Flow.draw_prior``, ``Flow.push``). The random stream is therefore the
same for every ``rows``: ``rows`` only sets how much is computed at once, so the timed choice of the
time budget does not change an ensemble: the flows' forward maps are bit-identical per sample across
batch sizes (``flows.transforms.softplus``; tests/mcmc/kernels/test_independence_rows.py checks the φ⁴,
U(1) and SU(N) flows on the CPU). The chosen ``rows`` is kept in the state (and so in checkpoints).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numba
import numpy as np
import torch

from flows.model import Flow
from mcmc.kernels.protocol import ChainState, StepInfo, nan_like, select

ACTIVATION_FACTOR = 16  # assumed peak memory of one flow sample, in units of its field's bytes


@dataclass(frozen=True)
class FlowChainState(ChainState):
    """B chains and their proposal buffer.

    ``x (B, *L)``, ``logp = −S(x) (B,)`` and ``logq = log q(x) (B,)`` (float64) describe the chains.
    The buffer holds K proposals per chain: ``buffer_x (K, B, *L)``, ``buffer_logp``, ``buffer_logq``,
    ``buffer_logu`` (log-uniforms of the accept tests) and ``buffer_obs[name]``, all ``(K, B)``;
    ``buffer_x[cursor:]`` are unused (``cursor == K``: empty). ``rows``: proposals per chain of each
    refill, 0 until the first timed refill has chosen it. The buffer is shared by all chains.
    """

    logq: torch.Tensor
    buffer_x: torch.Tensor
    buffer_logp: torch.Tensor
    buffer_logq: torch.Tensor
    cursor: int
    buffer_logu: torch.Tensor | None = None
    buffer_obs: dict[str, torch.Tensor] | None = None
    rows: int = 0

    def compact(self) -> FlowChainState:
        """The same chain with only the unused buffer rows kept (copied): what a checkpoint stores."""
        k = self.cursor

        def rest(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[k:].clone()

        obs = None if self.buffer_obs is None else {n: v[k:].clone() for n, v in self.buffer_obs.items()}
        return replace(
            self,
            buffer_x=rest(self.buffer_x),
            buffer_logp=rest(self.buffer_logp),
            buffer_logq=rest(self.buffer_logq),
            buffer_logu=rest(self.buffer_logu),
            buffer_obs=obs,
            cursor=0,
        )


@numba.njit(cache=True)
def _scan(logw: np.ndarray, logu: np.ndarray, logw0: np.ndarray, accepted: np.ndarray, source: np.ndarray,
          log_ratio: np.ndarray) -> None:  # pragma: no cover - compiled
    k_rows, n_chains = logw.shape
    for b in range(n_chains):
        cur, src = logw0[b], -1
        for k in range(k_rows):
            r = logw[k, b] - cur
            log_ratio[k, b] = r
            if logu[k, b] < r:  # False for NaN
                accepted[k, b] = True
                cur, src = logw[k, b], k
            source[k, b] = src


def _host(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float64).numpy())


def accept_scan(
    logw: torch.Tensor, logu: torch.Tensor, logw0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independence-Metropolis decisions for K buffered proposals of B chains in one pass.

    ``logw (K, B)``: log w of the proposals; ``logu (K, B)``: log-uniforms; ``logw0 (B,)``: log w of
    the chains before the buffer. Row k accepts where ``logu[k] < logw[k] − logw_cur`` (NaN rejects),
    logw_cur being the log weight held after row k − 1. Returns ``accepted (K, B)`` bool, ``source
    (K, B)`` int64 (the buffer row whose proposal chain b holds after row k; −1: its configuration
    from before the buffer) and ``log_ratio (K, B)`` float64, on ``logw``'s device. The arithmetic is
    that of ``step`` (float64), so the results are bit-identical to K single steps. The scan is
    sequential in k, so it runs as one compiled loop on the host (one copy of the (K, B) weights each
    way) instead of K rounds of small device operations, which on a GPU cost more than the proposals.
    """
    w, u, w0 = _host(logw), _host(logu), _host(logw0)
    accepted = np.zeros(w.shape, dtype=np.bool_)
    source = np.empty(w.shape, dtype=np.int64)
    log_ratio = np.empty_like(w)
    _scan(w, u, w0, accepted, source, log_ratio)

    def back(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(logw.device, non_blocking=False)

    return back(accepted), back(source), back(log_ratio)


def accept_prob(log_ratio: torch.Tensor) -> torch.Tensor:
    """min(1, e^{log_ratio}), 0 for NaN; float64 of the same shape."""
    return torch.exp(torch.clamp(torch.nan_to_num(log_ratio, nan=-torch.inf), max=0.0))


def _pow2_floor(x: float) -> int:
    return 1 if x < 2 else 2 ** int(math.floor(math.log2(x)))


class IndependenceMetropolis:
    """Independence-Metropolis kernel for B chains on a flow proposal (float64 recommended).

    ``theory``: has ``action(x) -> (B,)`` (and ``observables(x) -> {name: (B,)}``, measured on every
    proposal when present); ``flow``: has ``sample(n, generator) -> (x, logq)`` and ``log_prob(x)`` —
    pass ``Flow.as_float64()`` so that log q is exact to float64 rounding. ``batch``: at most this many
    proposals per chain per refill; ``max_bytes``: memory budget of one refill (module docstring);
    ``refill_seconds``: time budget of one refill, None for none (a refill of ``batch`` rows, or as
    many as the memory budget allows).
    """

    def __init__(
        self,
        theory: Any,
        flow: Flow,
        batch: int = 1024,
        *,
        max_bytes: int = 1 << 30,
        refill_seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if batch < 1 or max_bytes < 1 or (refill_seconds is not None and not refill_seconds > 0):
            raise ValueError(f"need batch >= 1, max_bytes >= 1, refill_seconds > 0; got "
                             f"{batch}, {max_bytes}, {refill_seconds}")
        self.theory = theory
        self.flow = flow
        self.batch = int(batch)
        self.max_bytes = int(max_bytes)
        self.refill_seconds = refill_seconds
        self.clock = clock

    def _logp(self, x: torch.Tensor) -> torch.Tensor:
        return -self.theory.action(x).to(torch.float64)

    def max_rows(self, x: torch.Tensor) -> int:
        """Proposals per chain allowed by ``batch`` and the memory budget, for chains ``x (B, *L)``."""
        per_row = x.numel() * x.element_size() * ACTIVATION_FACTOR
        return max(1, min(self.batch, self.max_bytes // max(per_row, 1)))

    def _observe(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not hasattr(self.theory, "observables"):
            return {}
        return {k: v.to(torch.float64) for k, v in self.theory.observables(x).items()}

    @torch.no_grad()
    def _empty_buffer(self, x: torch.Tensor) -> dict[str, Any]:
        def empty() -> torch.Tensor:
            return x.new_empty((0, x.shape[0]), dtype=torch.float64)

        return {
            "buffer_x": x.new_empty((0, *x.shape)),
            "buffer_logp": empty(),
            "buffer_logq": empty(),
            "buffer_logu": empty(),
            "buffer_obs": {k: empty() for k in self._observe(x[:1])},
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

    def _proposals(
        self, n_chains: int, rows: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rows × n_chains`` proposals ``x (rows·B, *L)``, their ``logq (rows·B,)`` and the log-uniforms
        ``(rows, B)`` of their accept tests, the randomness drawn row by row (module docstring). A proposal
        without ``draw_prior``/``push`` (only ``sample``) is sampled in one call, its stream then
        depending on ``rows``."""
        def uniforms() -> torch.Tensor:
            return torch.rand((n_chains,), generator=generator, dtype=torch.float64, device=generator.device)

        if not (hasattr(self.flow, "draw_prior") and hasattr(self.flow, "push")):
            x, logq = self.flow.sample(n_chains * rows, generator)
            return x, logq, torch.log(torch.stack([uniforms() for _ in range(rows)]))
        z, u = [], []
        for _ in range(rows):
            z.append(self.flow.draw_prior(n_chains, generator))
            u.append(uniforms())
        with torch.inference_mode():  # no autograd bookkeeping at all; the buffer is only read afterwards
            x, logq = self.flow.push(torch.cat(z))
        return x, logq, torch.log(torch.stack(u))

    @torch.no_grad()
    def _draw(self, state: FlowChainState, rows: int, generator: torch.Generator) -> FlowChainState:
        """A fresh buffer of ``rows`` proposals per chain. The randomness is drawn row by row from
        ``generator`` (for each row: the B prior draws of its proposals, then its B uniforms), so the
        stream does not depend on ``rows``; the prior draws are then pushed through the flow in one call."""
        n_chains = state.x.shape[0]
        x, logq, logu = self._proposals(n_chains, rows, generator)
        logp = self._logp(x)
        obs = {k: v.reshape(rows, n_chains) for k, v in self._observe(x).items()}
        return replace(
            state,
            buffer_x=x.reshape(rows, n_chains, *x.shape[1:]),
            buffer_logp=logp.reshape(rows, n_chains),
            buffer_logq=logq.to(torch.float64).reshape(rows, n_chains),
            buffer_logu=logu,
            buffer_obs=obs,
            cursor=0,
        )

    @torch.no_grad()
    def refill(self, state: FlowChainState, generator: torch.Generator) -> FlowChainState:
        """Draw the next buffer. The first refill of a chain with a time budget draws one row and times
        it to choose ``rows`` (module docstring); later ones draw ``rows`` rows."""
        limit = self.max_rows(state.x)
        if state.rows:
            return self._draw(state, min(state.rows, limit), generator)
        if self.refill_seconds is None:
            return replace(self._draw(state, limit, generator), rows=limit)
        if state.x.device.type == "cuda":
            torch.cuda.synchronize(state.x.device)
        t0 = self.clock()
        new = self._draw(state, 1, generator)
        if state.x.device.type == "cuda":
            torch.cuda.synchronize(state.x.device)
        per_row = max(self.clock() - t0, 1e-9)
        return replace(new, rows=min(limit, _pow2_floor(self.refill_seconds / per_row)))

    def _ready(self, state: FlowChainState, generator: torch.Generator) -> FlowChainState:
        """The state with an unused buffer row at ``cursor`` (refilled when used up, or when a
        checkpoint of an older version carried no log-uniforms: unused proposals are independent of
        the chain, so dropping them changes nothing in distribution)."""
        legacy = state.buffer_logu is None or state.buffer_logu.shape[0] != state.buffer_x.shape[0]
        if state.cursor >= state.buffer_x.shape[0] or legacy:
            state = self.refill(state, generator)
        return state

    @torch.no_grad()
    def step(self, state: FlowChainState, generator: torch.Generator) -> tuple[FlowChainState, StepInfo]:
        """One independence-Metropolis update of every chain; refills the buffer first when it is used up."""
        state = self._ready(state, generator)
        k = state.cursor
        x_new, logp_new, logq_new = state.buffer_x[k], state.buffer_logp[k], state.buffer_logq[k]
        logw_new = logp_new - logq_new
        log_ratio = logw_new - (state.logp - state.logq)
        accepted = state.buffer_logu[k] < log_ratio  # False for NaN
        new = replace(
            state,
            x=select(accepted, x_new, state.x),
            logp=torch.where(accepted, logp_new, state.logp),
            logq=torch.where(accepted, logq_new, state.logq),
            cursor=k + 1,
        )
        info = StepInfo(
            accepted=accepted,
            accept_prob=accept_prob(log_ratio),
            dH=nan_like(log_ratio),
            logq=new.logq.clone(),
            proposal_logw=logw_new.clone(),
            proposal_obs={name: v[k].clone() for name, v in (state.buffer_obs or {}).items()},
        )
        return new, info

    @torch.no_grad()
    def steps(
        self, state: FlowChainState, generator: torch.Generator, n: int | None = None
    ) -> BufferSteps:
        """The next ``n`` updates at once (default and at most: the rest of the buffer, refilled first
        when used up): the vectorised twin of as many ``step`` calls, with bit-identical results."""
        state = self._ready(state, generator)
        k = state.cursor
        end = state.buffer_x.shape[0] if n is None else min(state.buffer_x.shape[0], k + max(int(n), 1))
        logp, logq = state.buffer_logp[k:end], state.buffer_logq[k:end]
        logw = logp - logq
        accepted, source, log_ratio = accept_scan(logw, state.buffer_logu[k:end], state.logp - state.logq)
        chains = torch.arange(state.x.shape[0], device=source.device)
        held, moved = source.clamp(min=0), source >= 0
        x_rows = torch.where(
            moved.reshape(*source.shape, *(1,) * (state.x.dim() - 1)),
            state.buffer_x[k:end][held, chains],
            state.x.unsqueeze(0),
        )
        logq_rows = torch.where(moved, logq[held, chains], state.logq)
        logp_rows = torch.where(moved, logp[held, chains], state.logp)
        new = replace(state, x=x_rows[-1], logp=logp_rows[-1], logq=logq_rows[-1], cursor=end)
        info = StepInfo(
            accepted=accepted,
            accept_prob=accept_prob(log_ratio),
            dH=nan_like(log_ratio),
            logq=logq_rows,
            proposal_logw=logw,
            proposal_obs={name: v[k:end] for name, v in (state.buffer_obs or {}).items()},
        )
        return BufferSteps(new, info, x_rows, logp_rows)


class BufferSteps(NamedTuple):
    """``IndependenceMetropolis.steps``: the state after the last of n updates, a ``StepInfo`` whose
    fields carry a leading update axis ``(n, B)``, and the chains' fields ``x (n, B, *L)`` and
    ``logp (n, B)`` after each update."""

    state: FlowChainState
    info: StepInfo
    x: torch.Tensor
    logp: torch.Tensor

"""Importance-weight diagnostics of a flow, and model selection on a fixed validation set.

With log w = −S(x) − log q(x) for x ~ q, the reweighting ESS per sample is (Σw)²/(N Σw²) and the
stationary independence-Metropolis acceptance is E_{x~p, x'~q}[min(1, w'/w)].

Validation draws the same ``n`` proposals (the same prior draws z, pushed through the current flow)
at every evaluation, from a generator seeded afresh with ``seed``: common random numbers, so two
evaluations differ only through the flow, and the training stream is never touched. The best flow by
validation ESS is kept (:class:`BestFlow`); training hands that one to sampling, never a worse one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

VALIDATION_KEYS = ("step", "ess", "acceptance", "khat", "cpu_seconds")


def ess_fraction(logw: torch.Tensor) -> float:
    """Reweighting ESS per sample, (Σw)²/(N Σw²), from ``logw (N,)`` (computed in log space)."""
    logw = logw.to(torch.float64)
    if not torch.isfinite(logw).all():
        return float("nan")
    return math.exp(2 * torch.logsumexp(logw, 0).item() - torch.logsumexp(2 * logw, 0).item()) / logw.numel()


def acceptance_estimate(logw: torch.Tensor) -> float:
    """Stationary acceptance of independence Metropolis, E_{x~p, x'~q}[min(1, w'/w)], from one batch.

    With p ∝ w q, the batch estimate is Σ_{i≠j} min(w_i, w_j) / ((N−1) Σ_i w_i); sorting w ascending
    turns the pair sum into 2 Σ_k w_(k) (N − k), k = 1..N, so it costs O(N log N).
    """
    logw = logw.to(torch.float64)
    n = logw.numel()
    if n < 2 or not torch.isfinite(logw).all():
        return float("nan")
    w = torch.exp(logw - logw.max()).sort().values
    ranks = torch.arange(n - 1, -1, -1, dtype=torch.float64, device=w.device)
    return (2.0 * (w * ranks).sum() / ((n - 1) * w.sum())).item()


@torch.no_grad()
def validation_logw(flow: Any, theory: Any, n: int, seed: int, chunk: int = 256) -> torch.Tensor:
    """log w ``(n,)`` (float64, CPU) of ``n`` proposals drawn from a generator seeded with ``seed`` on
    the flow's device, ``chunk`` at a time: the same prior draws at every call."""
    generator = torch.Generator(device=flow.device).manual_seed(seed)
    parts = []
    for start in range(0, n, chunk):
        x, logq = flow.sample(min(chunk, n - start), generator)
        parts.append((-theory.action(x) - logq).to("cpu", torch.float64))
    return torch.cat(parts)


def validate(flow: Any, theory: Any, n: int, seed: int,
             tail_index: Callable[[np.ndarray], float] | None = None) -> dict[str, float]:
    """ESS, acceptance estimate and (when ``tail_index`` is given, e.g. a Pareto k̂ of the largest
    weights) the tail index of the validation log-weights; k̂ is NaN without it."""
    was_training = flow.training
    flow.eval()
    logw = validation_logw(flow, theory, n, seed)
    flow.train(was_training)
    khat = float(tail_index(logw.numpy())) if tail_index is not None else math.nan
    return {"ess": ess_fraction(logw), "acceptance": acceptance_estimate(logw), "khat": khat}


@dataclass
class BestFlow:
    """The best weights seen so far by validation ESS (a NaN ESS never wins; ties keep the earlier)."""

    state: dict[str, torch.Tensor] | None = None
    ess: float = -math.inf
    step: int = -1
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in VALIDATION_KEYS})

    def offer(self, flow: torch.nn.Module, record: dict[str, float]) -> bool:
        """Record one validation (``record`` holds ``VALIDATION_KEYS``); keep the flow's weights when its
        ESS beats the best so far. Returns whether it did."""
        for k in VALIDATION_KEYS:
            self.history[k].append(float(record[k]))
        if not record["ess"] > self.ess:
            return False
        self.state = {k: v.detach().clone() for k, v in flow.state_dict().items()}
        self.ess, self.step = float(record["ess"]), int(record["step"])
        return True

    def to_payload(self) -> dict[str, Any]:
        """Checkpoint form (tensors and plain containers)."""
        return {"state": self.state, "ess": self.ess, "step": self.step,
                "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()}}

    @classmethod
    def from_payload(cls, payload: dict[str, Any] | None) -> BestFlow:
        """Inverse of :meth:`to_payload`; ``None`` (a checkpoint without validation) gives an empty one."""
        if payload is None:
            return cls()
        saved = payload["history"]
        history = {k: saved[k].tolist() if k in saved else [] for k in VALIDATION_KEYS}
        return cls(payload["state"], float(payload["ess"]), int(payload["step"]), history)

"""Flow reweighting without a Markov chain: ⟨O⟩ ≈ Σ w O / Σ w over independent flow proposals, with
log w = −S − log q (Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515)."""

from __future__ import annotations

import numpy as np
import torch

from flows.model import Flow
from lattice.theories import Theory
from observables.estimators import ReweightedResult, ess, reweighted_mean


@torch.no_grad()
def flow_proposals(
    theory: Theory, flow: Flow, n: int, generator: torch.Generator, batch: int = 4096
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
    theory: Theory, flow: Flow, n: int, generator: torch.Generator, batch: int = 4096, n_bins: int = 20
) -> tuple[dict[str, ReweightedResult], float]:
    """Self-normalised reweighting ⟨O⟩ ≈ Σ w O / Σ w over ``n`` flow proposals (no Markov chain).

    Returns ``{name: ReweightedResult(mean, err, ess, n)}`` (blocked-jackknife errors, from
    ``observables.estimators``) and the ESS per proposal (Σw)²/(N Σw²).
    """
    values, logw = flow_proposals(theory, flow, n, generator, batch)
    return {k: reweighted_mean(v, logw, n_bins=n_bins) for k, v in values.items()}, ess(logw)

"""Topological-charge diagnostics: tunnelling, autocorrelation, cost per independent sample, Q plots.

Charge series come in any ``observables.gamma`` layout: a 1-D array ``(N,)`` of one chain, an array
``(N, R)`` of R chains (the HDF5 ``obs/Q`` layout), or a list of per-chain arrays ``(N_r,)``.

* Tunnelling rate: the fraction of consecutive stored configurations whose (rounded) charge differs,
  pooled over chains. A frozen sampler (Kanwar et al., PRL 125 (2020) 121601) has rate → 0 and
  τ_int(Q) → ∞ while the plaquette still decorrelates.
* Cost per independent sample: 2 τ_int × (seconds per stored configuration), since N_eff = N / (2 τ_int).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from observables.gamma import as_replicas, gamma_analysis
from observables.plots import save_figure


@dataclass(frozen=True)
class TopologySummary:
    """Charge statistics of an ensemble.

    ``q_mean``, ``q_err``: ⟨Q⟩ (0 by symmetry) with its Gamma-method error; ``q2_mean``, ``q2_err``: ⟨Q²⟩;
    ``tau_q``, ``tau_q_err``: τ_int(Q) and ``tau_q2``: τ_int(Q²), in stored configurations;
    ``tunnelling_rate``: changes of Q per stored configuration; ``n_tunnelling``: their number;
    ``n``: measurements in all; ``max_non_integer``: max |Q − round(Q)| (a check of the definition).
    """

    q_mean: float
    q_err: float
    q2_mean: float
    q2_err: float
    tau_q: float
    tau_q_err: float
    tau_q2: float
    tunnelling_rate: float
    n_tunnelling: int
    n: int
    max_non_integer: float

    def cost_per_independent(self, seconds_per_config: float) -> float:
        """Seconds per statistically independent charge: 2 τ_int(Q) × seconds per stored configuration."""
        return cost_per_independent_sample(self.tau_q, seconds_per_config)


def integer_charges(data: ArrayLike | Sequence[ArrayLike]) -> list[np.ndarray]:
    """Per-chain charges rounded to integers, each ``(N_r,)`` int64."""
    return [np.rint(r).astype(np.int64) for r in as_replicas(data)]


def tunnelling_events(data: ArrayLike | Sequence[ArrayLike]) -> tuple[int, int]:
    """(number of consecutive pairs with different rounded Q, number of consecutive pairs), over chains."""
    chains = integer_charges(data)
    changes = sum(int(np.count_nonzero(np.diff(c))) for c in chains)
    pairs = sum(max(len(c) - 1, 0) for c in chains)
    return changes, pairs


def tunnelling_rate(data: ArrayLike | Sequence[ArrayLike]) -> float:
    """Changes of the rounded charge per stored configuration, pooled over chains (NaN if no pair)."""
    changes, pairs = tunnelling_events(data)
    return changes / pairs if pairs else float("nan")


def cost_per_independent_sample(tau_int: float, seconds_per_config: float) -> float:
    """2 τ_int × seconds per stored configuration: the cost of one effectively independent measurement."""
    return 2.0 * tau_int * seconds_per_config


def charge_histogram(data: ArrayLike | Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram of the rounded charge over all chains: ``(charges (K,), frequencies (K,))``,
    charges from min to max Q in steps of 1."""
    pooled = np.concatenate(integer_charges(data))
    charges = np.arange(pooled.min(), pooled.max() + 1)
    counts = np.bincount(pooled - pooled.min(), minlength=len(charges))
    return charges, counts / counts.sum()


def summarize_topology(data: ArrayLike | Sequence[ArrayLike], S: float = 1.5) -> TopologySummary:
    """Gamma-method ⟨Q⟩, ⟨Q²⟩, τ_int(Q), τ_int(Q²) and the tunnelling rate of a charge series."""
    reps = as_replicas(data)
    q = gamma_analysis(reps, S)
    q2 = gamma_analysis([r * r for r in reps], S)
    changes, pairs = tunnelling_events(reps)
    worst = max(float(np.abs(r - np.rint(r)).max()) for r in reps)
    return TopologySummary(q.mean, q.err, q2.mean, q2.err, q.tau_int, q.tau_int_err, q2.tau_int,
                           changes / pairs if pairs else float("nan"), changes, q.n, worst)



def plot_charge_history(data: ArrayLike | Sequence[ArrayLike], path: str | os.PathLike[str],
                        max_chains: int = 4, label: str = "") -> Path:
    """Step plot of Q against the configuration index for the first ``max_chains`` chains."""
    chains = integer_charges(data)
    fig = Figure(figsize=(7, 3.2), layout="tight")
    ax = fig.add_subplot()
    for r, c in enumerate(chains[:max_chains]):
        ax.step(np.arange(len(c)), c, where="post", lw=0.7, label=f"chain {r}")
    rate = tunnelling_rate(chains)
    ax.set_title(f"{label + ': ' if label else ''}topological charge (tunnelling rate {rate:.3g} per config)")
    ax.set_xlabel("configuration")
    ax.set_ylabel("Q")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(chains) > 1:
        ax.legend(loc="upper right", fontsize="small")
    return save_figure(fig, path)


def plot_charge_histogram(data: ArrayLike | Sequence[ArrayLike], path: str | os.PathLike[str],
                          exact: Mapping[int, float] | None = None, label: str = "") -> Path:
    """Bar histogram of the rounded charge, with exact probabilities ``{Q: P(Q)}`` overlaid when given
    (e.g. from ``lattice.exact_u1.charge_distribution``)."""
    charges, freq = charge_histogram(data)
    fig = Figure(figsize=(5, 3.5), layout="tight")
    ax = fig.add_subplot()
    ax.bar(charges, freq, width=0.8, alpha=0.7, label="sampled")
    if exact is not None:
        qs = np.array(sorted(q for q, p in exact.items() if p > 1e-6 or charges.min() <= q <= charges.max()))
        ax.plot(qs, [exact[int(q)] for q in qs], "o", color="C3", ms=4, label="exact")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("Q")
    ax.set_ylabel("P(Q)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{label + ': ' if label else ''}charge distribution")
    return save_figure(fig, path)

"""Side-by-side figures of several samplers on one theory: histories, ρ(t), τ_int(W), histograms, cost."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from observables.gamma import GammaResult
from observables.plots import save_figure


def plot_observable_comparison(
    name: str,
    labels: Sequence[str],
    series: Sequence[Sequence[np.ndarray]],
    results: Sequence[GammaResult],
    path: str | os.PathLike[str],
) -> Path:
    """One row of four panels for observable ``name``, one colour per sampler.

    ``series[k]``: the replicas ``(N_r,)`` of sampler k; ``results[k]`` its Gamma analysis.
    Panels: history of the first chain, ρ(t), τ_int(W) with the chosen W marked, pooled histogram.
    """
    fig = Figure(figsize=(16, 3.8), layout="constrained")
    ax_hist, ax_rho, ax_tau, ax_pdf = fig.subplots(1, 4)
    for k, (label, reps, res) in enumerate(zip(labels, series, results, strict=True)):
        colour = f"C{k}"
        ax_hist.plot(reps[0], lw=0.5, color=colour, label=label)
        ax_rho.plot(res.rho, ".-", ms=2, lw=0.7, color=colour, label=label)
        ax_tau.plot(
            res.tau_int_of_w,
            ".-",
            ms=2,
            lw=0.7,
            color=colour,
            label=f"{label}: τ_int = {res.tau_int:.3g} ± {res.tau_int_err:.2g}",
        )
        ax_tau.axvline(res.window, color=colour, ls="--", lw=0.7)
        pooled = np.concatenate(list(reps))
        ax_pdf.hist(
            pooled,
            bins=1 if np.ptp(pooled) == 0 else "auto",
            density=True,
            histtype="step",
            color=colour,
            label=label,
        )
    ax_hist.set(title=f"{name}: history (chain 0)", xlabel="configuration", ylabel=name)
    ax_rho.axhline(0.0, color="k", lw=0.5)
    ax_rho.set(title="ρ(t)", xlabel="t", xlim=(0, max(len(r.rho) for r in results)))
    ax_tau.set(title="τ_int(W), chosen W dashed", xlabel="W")
    ax_pdf.set(title="histogram", xlabel=name, ylabel="density")
    for ax in (ax_hist, ax_tau, ax_pdf):
        ax.legend(fontsize="x-small")
    return save_figure(fig, path)


def plot_cost(
    labels: Sequence[str], cost: Mapping[str, Sequence[float | None]], path: str | os.PathLike[str]
) -> Path:
    """Cost per independent sample (seconds, log scale) of each sampler, grouped by observable."""
    fig = Figure(figsize=(max(6, 1.6 * len(cost) * len(labels)), 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        values = [np.nan if v[k] is None else v[k] for v in cost.values()]
        ax.bar(np.arange(len(cost)) + k * width, values, width, label=label)
    ax.set_xticks(np.arange(len(cost)) + 0.4 - width / 2, list(cost))
    ax.set_yscale("log")
    ax.set_ylabel("seconds per independent sample")
    ax.set_title("sampling cost 2 τ_int × (seconds per configuration); training not included")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_cost_scan(
    param: str,
    values: Sequence[float],
    cost: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    observable: str = "",
) -> Path:
    """Cost per independent sample against a theory parameter (β or L), one line per sampler."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for label, ys in cost.items():
        ax.plot(values, ys, "o-", label=label)
    ax.set_yscale("log")
    ax.set(xlabel=param, ylabel=f"seconds per independent {observable} sample".replace("  ", " "))
    ax.legend()
    return save_figure(fig, path)

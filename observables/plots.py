"""Diagnostic plots written as PNG files: Monte Carlo histories, ρ(t), τ_int(W), histograms, training.

Figures are built with ``matplotlib.figure.Figure`` (``layout="tight"``, cheaper than constrained layout)
and rendered by the Agg canvas directly, without ``pyplot``: no global figure state is created, nothing
needs closing, and no display is required.
Every ``plot_*`` function writes one file, creating its directory, and returns its ``Path``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from observables.gamma import GammaResult, as_replicas

MAX_TRACES = 8  # chains drawn in a history plot; the histogram uses all of them


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` with the Agg canvas to ``path`` (PNG), creating parent directories."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=100)
    return out


def draw_history(ax: Axes, replicas: Sequence[np.ndarray], name: str = "") -> None:
    """Monte Carlo history a_i^r against i for the first ``MAX_TRACES`` replicas, each ``(N_r,)``."""
    for r, rep in enumerate(replicas[:MAX_TRACES]):
        ax.plot(np.arange(len(rep)), rep, lw=0.6, alpha=0.8, label=f"r{r}")
    shown = min(len(replicas), MAX_TRACES)
    ax.set_title(f"{name} history ({shown} of {len(replicas)} chains)" if name else "history")
    ax.set_xlabel("configuration")
    ax.set_ylabel(name or "value")


def draw_rho(ax: Axes, result: GammaResult) -> None:
    """ρ(t) with its ±σ(ρ) band against the lag t, the chosen window W marked."""
    t = np.arange(len(result.rho))
    ax.fill_between(t, result.rho - result.rho_err, result.rho + result.rho_err, alpha=0.3, lw=0)
    ax.plot(t, result.rho, ".-", ms=3, lw=0.8)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.axvline(result.window, color="r", ls="--", lw=0.8, label=f"W = {result.window}")
    ax.set_xlabel("t")
    ax.set_ylabel("ρ(t)")
    ax.set_title("normalised autocorrelation")
    ax.legend(loc="upper right", fontsize="small")


def draw_tau_int(ax: Axes, result: GammaResult) -> None:
    """τ_int(W) against W with the chosen W (vertical line) and the final τ_int ± σ (band)."""
    w = np.arange(len(result.tau_int_of_w))
    ax.plot(w, result.tau_int_of_w, ".-", ms=3, lw=0.8)
    lo, hi = result.tau_int - result.tau_int_err, result.tau_int + result.tau_int_err
    ax.axhspan(lo, hi, color="C1", alpha=0.25, lw=0)
    ax.axvline(result.window, color="r", ls="--", lw=0.8, label=f"W = {result.window}, S = {result.S:g}")
    ax.set_xlabel("W")
    ax.set_ylabel("τ_int(W)")
    ax.set_title(f"τ_int = {result.tau_int:.3g} ± {result.tau_int_err:.2g}")
    ax.legend(loc="lower right", fontsize="small")


def draw_histogram(
    ax: Axes, replicas: Sequence[np.ndarray], name: str = "", bins: int | str = "auto"
) -> None:
    """Normalised histogram of all measurements of all replicas pooled together."""
    pooled = np.concatenate(list(replicas))
    if np.ptp(pooled) == 0:
        bins = 1
    ax.hist(pooled, bins=bins, density=True, alpha=0.8)
    ax.set_xlabel(name or "value")
    ax.set_ylabel("density")
    ax.set_title("histogram")


def plot_history(data: ArrayLike | Sequence[ArrayLike], path: str | os.PathLike[str], name: str = "") -> Path:
    """Monte Carlo history of one observable (any ``gamma_analysis`` data layout) to ``path``."""
    fig = Figure(figsize=(7, 3.5), layout="tight")
    draw_history(fig.add_subplot(), as_replicas(data), name)
    return save_figure(fig, path)


def plot_rho(result: GammaResult, path: str | os.PathLike[str]) -> Path:
    """ρ(t) with error band and window to ``path``."""
    fig = Figure(figsize=(5, 3.5), layout="tight")
    draw_rho(fig.add_subplot(), result)
    return save_figure(fig, path)


def plot_tau_int(result: GammaResult, path: str | os.PathLike[str]) -> Path:
    """τ_int(W) against W with the chosen W marked, to ``path``."""
    fig = Figure(figsize=(5, 3.5), layout="tight")
    draw_tau_int(fig.add_subplot(), result)
    return save_figure(fig, path)


def plot_histogram(
    data: ArrayLike | Sequence[ArrayLike],
    path: str | os.PathLike[str],
    name: str = "",
    bins: int | str = "auto",
) -> Path:
    """Histogram of all measurements of one observable to ``path``."""
    fig = Figure(figsize=(5, 3.5), layout="tight")
    draw_histogram(fig.add_subplot(), as_replicas(data), name, bins)
    return save_figure(fig, path)


def plot_observable_report(
    name: str, data: ArrayLike | Sequence[ArrayLike], result: GammaResult, out_dir: str | os.PathLike[str]
) -> Path:
    """Four panels (history, ρ(t), τ_int(W), histogram) of one observable in ``<out_dir>/<name>.png``."""
    reps = as_replicas(data)
    fig = Figure(figsize=(11, 7), layout="tight")
    axes = fig.subplots(2, 2)
    draw_history(axes[0, 0], reps, name)
    draw_rho(axes[0, 1], result)
    draw_tau_int(axes[1, 0], result)
    draw_histogram(axes[1, 1], reps, name)
    fig.suptitle(f"{name} = {result.mean:.6g} ± {result.err:.2g}   (N = {result.n}, R = {result.n_replicas})")
    return save_figure(fig, Path(out_dir) / f"{name}.png")


TRAINING_PANELS = (("loss", "loss"), ("ess", "ESS per sample"), ("acceptance", "acceptance"))


def plot_training(metrics: Mapping[str, ArrayLike], path: str | os.PathLike[str]) -> Path:
    """Training curves: loss, ESS and acceptance against step, against wall-clock seconds and, when
    recorded for every step, against the training's CPU seconds (one row each).

    ``metrics``: arrays of equal length ``(T,)`` under ``"step"``, ``"seconds"`` (and ``"cpu_seconds"``),
    ``"loss"``, ``"ess"``, ``"acceptance"``; a missing or all-NaN quantity leaves its panels marked "n/a".
    """
    cpu = np.asarray(metrics.get("cpu_seconds", []), dtype=np.float64)
    rows = [("step", "step"), ("seconds", "wall time [s]")]
    if len(cpu) and np.all(np.isfinite(cpu)):
        rows.append(("cpu_seconds", "CPU time [s]"))
    fig = Figure(figsize=(13, 3.25 * len(rows)), layout="tight")
    axes = fig.subplots(len(rows), 3)
    for row, (xkey, xlabel) in enumerate(rows):
        x = np.asarray(metrics.get(xkey, []), dtype=np.float64)
        for col, (key, label) in enumerate(TRAINING_PANELS):
            ax = axes[row, col]
            y = np.asarray(metrics.get(key, []), dtype=np.float64)
            if len(y) and len(y) == len(x) and np.any(np.isfinite(y)):
                ax.plot(x, y, lw=0.8)
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            if key == "loss" and len(y) and np.all(y[np.isfinite(y)] > 0):
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
    return save_figure(fig, path)


def plot_accept_history(accepted: ArrayLike, path: str | os.PathLike[str], window: int = 100) -> Path:
    """Acceptance diagnostics: running and moving-window acceptance, and an accept/reject raster.

    ``accepted``: booleans of shape ``(N,)`` or ``(N, B)`` (N updates of B chains). Top: cumulative
    acceptance and its moving average over ``window`` updates, averaged over chains; bottom: a raster
    with one row per chain (at most 64 drawn), accepted updates light, rejected dark.
    """
    acc = np.asarray(accepted, dtype=np.float64)
    acc = acc[:, None] if acc.ndim == 1 else acc.reshape(acc.shape[0], -1)
    per_step = acc.mean(axis=1)
    steps = np.arange(1, len(per_step) + 1)
    fig = Figure(figsize=(9, 5.5), layout="tight")
    top, bottom = fig.subplots(2, 1)
    top.plot(steps, np.cumsum(per_step) / steps, lw=1.0, label="running")
    k = max(1, min(window, len(per_step)))
    moving = np.convolve(per_step, np.ones(k) / k, mode="valid")
    top.plot(steps[k - 1 :], moving, lw=0.7, alpha=0.8, label=f"moving ({k})")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("acceptance")
    top.set_title(f"acceptance = {per_step.mean():.4f}")
    top.legend(loc="lower right", fontsize="small")
    raster = acc[:, :64].T
    bottom.imshow(
        raster,
        aspect="auto",
        interpolation="nearest",
        cmap="gray",
        vmin=0,
        vmax=1,
        extent=(0.5, len(per_step) + 0.5, raster.shape[0] - 0.5, -0.5),
    )
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("update")
    bottom.set_ylabel("chain")
    return save_figure(fig, path)

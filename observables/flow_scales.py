r"""Gradient-flow measurements of SU(N) links: t²E(t), the scales t₀ and w₀, Q at t₀ and χ_t.

Lüscher, JHEP 08 (2010) 071; w₀: Borsányi et al., JHEP 09 (2012) 010. Each configuration is Wilson-flowed
with step-size control (``lattice.gradflow.flow_adaptive``) through the grid t_k = k Δt, k = 0..n, and at
every grid time the clover E (primary ``E_<k>``) and the plaquette E (``Eplaq_<k>``) are recorded; in 4D
the improved-field-strength charge Q (``Q_<k>``) every ``q_every`` grid points. From the ensemble means:

    t2E_<t>      = t² ⟨E(t)⟩ (clover), t2E_plaq_<t> the same with the plaquette E, at the report times,
    t0           = t₀/a²: t² ⟨E(t)⟩ = 0.3, linear interpolation between grid times,
    w0           = w₀/a:  W(t) = t d/dt [t² ⟨E(t)⟩] = 0.3 at t = w₀², W by central differences on the grid,

each a function of the means ⟨E_k⟩ with its error by linear propagation (``observables.derived``).
Q_t0 is the per-configuration charge linearly interpolated in t to the ensemble's central t₀ (the error
of t₀ is not propagated into it: Q(t) is flat there), and χ_t = ⟨Q_t0²⟩ / V.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lattice.gradflow import energy_density, energy_density_plaquette, flow_adaptive, topological_charge

Derived = tuple[str, tuple[str, ...], Callable[[np.ndarray], float]]
T0_TARGET = W0_TARGET = 0.3


@dataclass(frozen=True)
class FlowGrid:
    """Flow-time grid t_k = k ``dt``, k = 0..n (n = round(t_max/dt)); ``q_every``: Q at every q_every-th
    grid time (4D); ``report_every``: t²E reported at every report_every-th; ``tol``: step-size tolerance."""

    t_max: float = 4.0
    dt: float = 0.1
    q_every: int = 2
    report_every: int = 5
    tol: float = 1e-5

    @property
    def times(self) -> np.ndarray:
        return self.dt * np.arange(int(round(self.t_max / self.dt)) + 1)

    @property
    def q_indices(self) -> list[int]:
        return list(range(0, len(self.times), self.q_every))


def flow_primaries(u: torch.Tensor, grid: FlowGrid) -> dict[str, torch.Tensor]:
    """``E_<k>``, ``Eplaq_<k>`` and (D = 4) ``Q_<k>`` of links ``(B, D, *L, N, N)``, each ``(B,)``."""
    out: dict[str, torch.Tensor] = {}
    q_at = set(grid.q_indices) if u.shape[1] == 4 else set()
    eps = min(0.01, grid.dt)
    for k, t in enumerate(grid.times):
        if k > 0:
            u, stats = flow_adaptive(u, float(grid.times[k - 1]), float(t), tol=grid.tol, eps=eps)
            eps = stats.next_eps
        out[f"E_{k}"] = energy_density(u)
        out[f"Eplaq_{k}"] = energy_density_plaquette(u)
        if k in q_at:
            out[f"Q_{k}"] = topological_charge(u, "improved")
    return out


def _crossing(t: np.ndarray, y: np.ndarray, target: float) -> float:
    """First t where y (sampled at t) reaches ``target``, by linear interpolation; NaN if never."""
    above = np.flatnonzero(y >= target)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    i = int(above[0])
    return float(t[i - 1] + (target - y[i - 1]) * (t[i] - t[i - 1]) / (y[i] - y[i - 1]))


def t0_of(times: np.ndarray, mean_e: np.ndarray) -> float:
    """t₀ from ⟨E⟩ on the grid ``times``."""
    return _crossing(times, times**2 * mean_e, T0_TARGET)


def w0_of(times: np.ndarray, mean_e: np.ndarray) -> float:
    """w₀ = sqrt(t) where t d/dt (t² ⟨E⟩) = 0.3, central differences on the (uniform) grid."""
    t2e = times**2 * mean_e
    w = times[1:-1] * (t2e[2:] - t2e[:-2]) / (times[2:] - times[:-2])
    t = _crossing(times[1:-1], w, W0_TARGET)
    return math.sqrt(t) if math.isfinite(t) else float("nan")


def _fmt(t: float) -> str:
    return f"{t:g}"


def flow_derived(grid: FlowGrid) -> list[Derived]:
    """``(name, inputs, f)`` for t0, w0, t2E_<t>, t2E_plaq_<t> (module docstring)."""
    times = grid.times
    e_names = tuple(f"E_{k}" for k in range(len(times)))
    out: list[Derived] = [
        ("t0", e_names, lambda a: t0_of(times, a)),
        ("w0", e_names, lambda a: w0_of(times, a)),
    ]
    for k in range(grid.report_every, len(times), grid.report_every):
        t = float(times[k])
        out.append((f"t2E_{_fmt(t)}", (f"E_{k}",), lambda a, t=t: t * t * float(a[0])))
        out.append((f"t2E_plaq_{_fmt(t)}", (f"Eplaq_{k}",), lambda a, t=t: t * t * float(a[0])))
    return out


def charge_at(grid: FlowGrid, series: dict[str, np.ndarray], t: float) -> np.ndarray | None:
    """Per-configuration Q at flow time ``t`` by linear interpolation of the ``Q_<k>`` series (any equal
    shapes); None when t is outside the measured range or there is no Q."""
    idx = [k for k in grid.q_indices if f"Q_{k}" in series]
    ts = grid.times[idx]
    if not idx or not (ts[0] <= t <= ts[-1]) or not math.isfinite(t):
        return None
    j = min(int(np.searchsorted(ts, t, side="right")), len(ts) - 1)
    lo = max(j - 1, 0)
    if ts[j] == ts[lo]:
        return np.asarray(series[f"Q_{idx[lo]}"], dtype=np.float64)
    w = (t - ts[lo]) / (ts[j] - ts[lo])
    q_lo, q_hi = (np.asarray(series[f"Q_{idx[i]}"], dtype=np.float64) for i in (lo, j))
    return (1 - w) * q_lo + w * q_hi


def scales_from_means(grid: FlowGrid, means: Sequence[float]) -> tuple[float, float]:
    """(t₀, w₀) from the means of E_k, in the order of the grid."""
    e = np.asarray(means, dtype=np.float64)
    return t0_of(grid.times, e), w0_of(grid.times, e)

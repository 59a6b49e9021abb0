r"""Wilson loops, Creutz ratios, the static potential and the Polyakov-loop correlator, U(1) and SU(N).

Links are U(1) angles ``(B, D, *L)`` (real) or SU(N) matrices ``(B, D, *L, N, N)`` (complex); U(1) links
are handled as 1 × 1 matrices e^{iθ}. The R × T loop in the plane (μ, ν) based at x is

    W_μν(R, T; x) = L_μ(x; R) L_ν(x + Rμ; T) L_μ(x + Tν; R)† L_ν(x; T)†,

with L_μ(x; R) = U_μ(x) U_μ(x+μ) … U_μ(x+(R−1)μ), and the per-configuration value is

    W(R, T) = ⟨Re tr W / N⟩ averaged over x, all planes μ < ν and both orientations (R along μ and along ν).

(N = 1 for U(1): cos of the loop's angle.) Derived from the ensemble means (``loop_derived``):

    creutz_RxT = χ(R, T) = −ln[W(R, T) W(R−1, T−1) / (W(R, T−1) W(R−1, T))],   W(0, ·) = W(·, 0) = 1,
    V_R        = aV(R) = ln[W(R, T_V) / W(R, T_V + 1)]   at one stated T_V.

Polyakov loop along direction 0, P(x⃗) = tr Π_{τ} U_0(τ, x⃗) / N, and its correlator

    polyakov_corr_r = (1/V) Σ_x Re[P(x⃗) P(x⃗ + r k̂)^*],   averaged over spatial directions k with r ≤ L_k/2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lattice.geometry import shift

Derived = tuple[str, tuple[str, ...], Callable[[np.ndarray], float]]


def as_matrices(u: torch.Tensor) -> torch.Tensor:
    """SU(N) links pass through; U(1) angles ``(B, D, *L)`` become 1 × 1 phases ``(B, D, *L, 1, 1)``."""
    return u if u.is_complex() else torch.polar(torch.ones_like(u), u)[..., None, None]


def _dag(m: torch.Tensor) -> torch.Tensor:
    return m.conj().transpose(-1, -2)


def _lines(link: torch.Tensor, mu: int, n: int) -> list[torch.Tensor]:
    """[L_μ(x; 1), …, L_μ(x; n)] for one direction's links ``(B, *L, N, N)``."""
    out = [link]
    for r in range(1, n):
        out.append(out[-1] @ shift(link, mu, r))
    return out


def _retrace(m: torch.Tensor) -> torch.Tensor:
    """Re tr m / N averaged over sites: ``(B, *L, N, N) -> (B,)``."""
    n = m.shape[-1]
    return torch.diagonal(m, dim1=-2, dim2=-1).real.sum(-1).flatten(1).mean(1) / n


def wilson_loops(u: torch.Tensor, r_max: int, t_max: int) -> dict[str, torch.Tensor]:
    """``W_<R>x<T>`` for 1 ≤ R ≤ r_max, 1 ≤ T ≤ t_max, each ``(B,)`` (module docstring). Both orientations
    of every plane are averaged, so W_RxT and W_TxR agree up to noise; a loop longer than a lattice
    extent in its plane is left out of that plane."""
    u = as_matrices(u)
    dim, shape = u.shape[1], u.shape[2 : 2 + u.shape[1]]
    n = max(r_max, t_max)
    sums: dict[tuple[int, int], list[torch.Tensor]] = {}
    for mu in range(dim):
        lines_mu = _lines(u[:, mu], mu, min(n, shape[mu]))
        for nu in range(dim):
            if nu == mu:
                continue
            lines_nu = _lines(u[:, nu], nu, min(n, shape[nu]))
            for r in range(1, min(r_max, shape[mu]) + 1):
                a = lines_mu[r - 1]
                for t in range(1, min(t_max, shape[nu]) + 1):
                    side = lines_nu[t - 1]
                    loop = (a @ shift(side, mu, r)) @ _dag(side @ shift(a, nu, t))
                    sums.setdefault((r, t), []).append(_retrace(loop))
    return {f"W_{r}x{t}": torch.stack(v).mean(0) for (r, t), v in sorted(sums.items())}


def polyakov_correlator(u: torch.Tensor, r_max: int | None = None) -> dict[str, torch.Tensor]:
    """``polyakov_corr_<r>`` for r = 0..r_max (default min_k L_k/2 over spatial k ≥ 1), each ``(B,)``."""
    u = as_matrices(u)
    dim, shape = u.shape[1], u.shape[2 : 2 + u.shape[1]]
    if dim < 2:
        raise ValueError("the Polyakov-loop correlator needs D >= 2")
    line = _lines(u[:, 0], 0, shape[0])[-1]  # (B, *L, N, N); its trace is the same at every τ
    p = torch.diagonal(line, dim1=-2, dim2=-1).sum(-1) / line.shape[-1]  # (B, *L) complex
    top = min(shape[k] // 2 for k in range(1, dim)) if r_max is None else r_max
    out = {}
    for r in range(top + 1):
        dirs = [k for k in range(1, dim) if r <= shape[k] // 2]
        corr = [(p * shift(p, k, r).conj()).real.flatten(1).mean(1) for k in dirs]
        out[f"polyakov_corr_{r}"] = torch.stack(corr).mean(0)
    return out


def _w(names: dict[tuple[int, int], str], r: int, t: int) -> str | None:
    return None if r == 0 or t == 0 else names[(r, t)]


def loop_derived(r_max: int, t_max: int, t_v: int | None = None) -> list[Derived]:
    """``(name, inputs, f)`` for every ``creutz_<R>x<T>`` (1 ≤ R ≤ r_max, 1 ≤ T ≤ t_max) and ``V_<R>`` at
    T_V = ``t_v`` (default t_max − 1), from the means of ``W_<R>x<T>`` (module docstring)."""
    names = {(r, t): f"W_{r}x{t}" for r in range(1, r_max + 1) for t in range(1, t_max + 1)}
    out: list[Derived] = []
    for r in range(1, r_max + 1):
        for t in range(1, t_max + 1):
            quad = [_w(names, r, t), _w(names, r - 1, t - 1), _w(names, r, t - 1), _w(names, r - 1, t)]
            used = tuple(q for q in quad if q is not None)
            signs = [1.0, 1.0, -1.0, -1.0]
            pos = [signs[i] for i, q in enumerate(quad) if q is not None]
            out.append((f"creutz_{r}x{t}", used, _log_ratio(pos, negate=True)))
    t_v = t_max - 1 if t_v is None else t_v
    if 1 <= t_v < t_max:
        for r in range(1, r_max + 1):
            out.append((f"V_{r}", (names[(r, t_v)], names[(r, t_v + 1)]), _log_ratio([1.0, -1.0])))
    return out


def _log_ratio(signs: list[float], negate: bool = False) -> Callable[[np.ndarray], float]:
    """f(a) = ±Σ_i s_i ln a_i; NaN when any mean is not positive."""

    def f(a: np.ndarray) -> float:
        if np.any(a <= 0):
            return float("nan")
        value = float(np.dot(signs, np.log(a)))
        return -value if negate else value

    return f


def default_extent(shape: tuple[int, ...]) -> int:
    """Largest loop side measured by default: L/2 of the smallest extent."""
    return max(1, math.floor(min(shape) / 2))

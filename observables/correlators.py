r"""φ⁴ two-point functions: G(t), effective mass, χ₂, ξ₂ and the Binder cumulant.

Conventions of Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515 (sec. IV). Fields ``φ`` have shape
``(B, *L)``; direction 0 is "time", t = 0..L₀−1, and V = Π L_μ. With the connected two-point function

    G_c(x) = (1/V) Σ_y [⟨φ(y) φ(y+x)⟩ − ⟨φ(y)⟩⟨φ(y+x)⟩],

the measured quantities are

    G(t)   = Σ_{x⃗} G_c(x⃗, t) = ⟨c_t⟩ − (V/L₀) ⟨m⟩²,   c_t = (1/V) Σ_τ S(τ) S(τ+t),  S(τ) = Σ_{x⃗} φ(x⃗, τ),
    meff(t) = arccosh[(G(t−1) + G(t+1)) / (2 G(t))]     (t = 1..L₀/2 − 1; periodic cosh form),
    χ₂     = Σ_x G_c(x) = G̃(0) = ⟨M²/V⟩ − V ⟨m⟩²,       m = M/V,  M = Σ_x φ_x,
    G̃(p)  = Σ_x e^{ipx} G_c(x) = ⟨|φ̃(p)|²/V⟩ (p ≠ 0),
    ξ₂²    = [G̃(0)/G̃(p_min) − 1] / (4 sin²(π/L₀)),       p_min = 2π/L₀ along one direction,
    U₄     = 1 − ⟨M⁴⟩ / (3 ⟨M²⟩²)                        (0 for a Gaussian M).

G̃(p_min) is averaged over the directions whose extent equals L₀ (equal by symmetry). Every quantity is
a function of the means of per-configuration *primaries* (``phi4_primaries``); ``phi4_derived`` lists
those functions, so that ``observables.gamma.gamma_derived`` gives each one its Gamma-method error by
linear propagation (Wolff 2004, sec. 3.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

Derived = tuple[str, tuple[str, ...], Callable[[np.ndarray], float]]


def slice_sums(phi: torch.Tensor) -> torch.Tensor:
    """S(τ) = Σ_{x⃗} φ(x⃗, τ): ``(B, L₀, *L') -> (B, L₀)``."""
    return phi.flatten(2).sum(2) if phi.dim() > 2 else phi


def phi4_primaries(phi: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-configuration primaries of ``phi (B, *L)``, each ``(B,)``: ``c_<t>`` (t = 0..L₀/2), ``m`` = M/V,
    ``m2`` = M²/V, ``m4`` = M⁴/V², ``ft_pmin`` = |φ̃(p_min)|²/V (averaged over directions of extent L₀)."""
    shape = phi.shape[1:]
    v, l0 = math.prod(shape), shape[0]
    s = slice_sums(phi)
    out = {f"c_{t}": (s * torch.roll(s, -t, dims=1)).sum(1) / v for t in range(l0 // 2 + 1)}
    mag = phi.flatten(1).sum(1)
    out.update(m=mag / v, m2=mag**2 / v, m4=mag**4 / v**2)
    same = [mu for mu, extent in enumerate(shape) if extent == l0]
    ft = torch.zeros_like(mag)
    for mu in same:
        coord = torch.arange(l0, dtype=phi.dtype, device=phi.device)
        view = [1] * len(shape)
        view[mu] = l0
        phase = (2 * math.pi / l0) * coord.reshape(view)
        re, im = (phi * torch.cos(phase)).flatten(1).sum(1), (phi * torch.sin(phase)).flatten(1).sum(1)
        ft = ft + (re**2 + im**2) / v
    out["ft_pmin"] = ft / len(same)
    return out


def _g(t: int, vol_slice: float) -> Callable[[np.ndarray], float]:
    """G(t) from the means (c_t, m)."""
    return lambda a: float(a[0] - vol_slice * a[1] ** 2)


def _meff(vol_slice: float) -> Callable[[np.ndarray], float]:
    """meff from the means (c_{t−1}, c_t, c_{t+1}, m); NaN where the argument of arccosh is below 1."""

    def f(a: np.ndarray) -> float:
        g = a[:3] - vol_slice * a[3] ** 2
        x = (g[0] + g[2]) / (2.0 * g[1])
        return float(np.arccosh(x)) if x >= 1.0 else float("nan")

    return f


def phi4_derived(shape: Sequence[int]) -> list[Derived]:
    """``(name, primaries, f)`` for G_<t>, meff_<t>, chi2, xi2 and U4 on a lattice ``shape`` (see above)."""
    v, l0 = math.prod(shape), shape[0]
    vs = v / l0
    out: list[Derived] = [(f"G_{t}", (f"c_{t}", "m"), _g(t, vs)) for t in range(l0 // 2 + 1)]
    out += [
        (f"meff_{t}", (f"c_{t - 1}", f"c_{t}", f"c_{t + 1}", "m"), _meff(vs)) for t in range(1, l0 // 2)
    ]
    out.append(("chi2", ("m2", "m"), lambda a: float(a[0] - v * a[1] ** 2)))
    denom = 4.0 * math.sin(math.pi / l0) ** 2

    def xi2(a: np.ndarray) -> float:
        ratio = (a[0] - v * a[1] ** 2) / a[2]
        return math.sqrt((ratio - 1.0) / denom) if ratio >= 1.0 else float("nan")

    out.append(("xi2", ("m2", "m", "ft_pmin"), xi2))
    out.append(("U4", ("m4", "m2"), lambda a: float(1.0 - a[0] / (3.0 * a[1] ** 2))))
    return out

"""Diffeomorphisms of the circle as pure functions (no ``torch.nn``), for angles in [0, 2π].

Signature, as in ``flows.transforms``:

    forward(x, params) -> (y, logdet)        inverse(y, params) -> (x, logdet)

``x``, ``y`` and ``logdet`` share one shape ``(...)``; ``params`` has shape ``(..., P)``, one raw parameter
vector per element. ``logdet`` is log dy/dx (forward) or log dx/dy (inverse), elementwise. Inputs lie in
[0, 2π] (both ends allowed, as ``torch.remainder`` can return 2π after rounding); outputs lie in [0, 2π]
and both maps fix the circle's orientation (degree-one maps, dy/dx > 0). All-zero parameters give the
identity map.

* ``ncp``: mixture of non-compact projections (D. J. Rezende et al., "Normalizing flows on tori and
  spheres", ICML 2020). With the lift L_α(u) = 2 atan(α tan(u/2)) (continued so that L(u + 2π) = L(u) + 2π)
  and shifts β_k, convex weights ρ_k, scales α_k > 0 (K components, P = 3K):

      y = Σ_k ρ_k [L_{α_k}(x − β_k) + β_k]  (mod 2π),    L_α'(u) = 2α / ((1 + α²) + (1 − α²) cos u).

  A convex combination of lifts of increasing degree-one maps is again one, so y is a circle
  diffeomorphism; its inverse is found by bisection on the monotone lift (to machine precision).
* ``spline``: circular rational-quadratic spline (C. Durkan et al., NeurIPS 2019; Rezende et al. 2020)
  with K bins on [0, 2π] fixing 0 and 2π, and equal slopes at 0 and 2π so that the map is C¹ on the
  circle (P = 3K: K widths, K heights, K knot derivatives, the K-th shared by both ends).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flows.transforms import cumsum_last, rq_forward_in_bin, rq_inverse_in_bin, softmax, softplus

TWO_PI = 2.0 * math.pi
MIN_SCALE = 1e-3  # smallest NCP α
MIN_BIN = 1e-3  # smallest spline bin width/height, as a fraction of 2π
MIN_SLOPE = 1e-3  # smallest spline knot derivative
_UNIT_OFFSET = math.log(math.expm1(1.0 - MIN_SLOPE))  # softplus(0 + offset) + 1e−3 = 1
_BISECTION_STEPS = 60

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def positive(raw: torch.Tensor, floor: float) -> torch.Tensor:
    """floor + softplus(raw + c), with c chosen so that raw = 0 gives exactly 1."""
    return floor + softplus(raw + math.log(math.expm1(1.0 - floor)))


# ----------------------------------------------------------------------------- NCP mixture

def ncp_n_params(components: int) -> int:
    """Raw parameters per element of a K-component NCP mixture: K scales, K shifts, K weight logits."""
    return 3 * components


def _ncp_split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """α_k > 0, β_k and log ρ_k, each ``(..., K)``, from ``params (..., 3K)``."""
    k = params.shape[-1] // 3
    if 3 * k != params.shape[-1] or k == 0:
        raise ValueError(f"NCP params have {params.shape[-1]} entries, expected 3K for some K >= 1")
    alpha = positive(params[..., :k], MIN_SCALE)
    shift = params[..., k:2 * k]
    log_weight = torch.log_softmax(params[..., 2 * k:], dim=-1)
    return alpha, shift, log_weight


def _ncp_lift(x: torch.Tensor, alpha: torch.Tensor, shift: torch.Tensor, log_weight: torch.Tensor
              ) -> torch.Tensor:
    """Monotone lift Σ_k ρ_k [L_{α_k}(x − β_k) + β_k] of ``x (...)``, with lift(x + 2π) = lift(x) + 2π."""
    u = x.unsqueeze(-1) - shift
    w = u - TWO_PI * torch.round(u / TWO_PI)  # u = w + 2πm with w ∈ [−π, π]
    half = 0.5 * w
    lifted = 2.0 * torch.atan2(alpha * torch.sin(half), torch.cos(half)) + (u - w)  # cos(w/2) ≥ 0
    return (torch.exp(log_weight) * (lifted + shift)).sum(-1)


def _ncp_log_slope(x: torch.Tensor, alpha: torch.Tensor, shift: torch.Tensor, log_weight: torch.Tensor
                   ) -> torch.Tensor:
    """log dy/dx = log Σ_k ρ_k 2α_k / ((1 + α_k²) + (1 − α_k²) cos(x − β_k)), shape ``(...)``."""
    cos_u = torch.cos(x.unsqueeze(-1) - shift)
    a2 = alpha * alpha
    log_terms = log_weight + torch.log(2.0 * alpha) - torch.log((1.0 + a2) + (1.0 - a2) * cos_u)
    return torch.logsumexp(log_terms, dim=-1)


def ncp_forward(x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NCP mixture y = Σ_k ρ_k [L_{α_k}(x − β_k) + β_k] mod 2π; ``x (...)``, ``params (..., 3K)``.

    Returns ``(y ∈ [0, 2π) (...), log dy/dx (...)``.
    """
    alpha, shift, log_weight = _ncp_split(params)
    y = torch.remainder(_ncp_lift(x, alpha, shift, log_weight), TWO_PI)
    return y, _ncp_log_slope(x, alpha, shift, log_weight)


@torch.no_grad()
def _ncp_solve(y: torch.Tensor, alpha: torch.Tensor, shift: torch.Tensor, log_weight: torch.Tensor
               ) -> torch.Tensor:
    """x ∈ [0, 2π] with lift(x) ≡ y (mod 2π), by bisection on the monotone lift over [0, 2π]."""
    base = _ncp_lift(torch.zeros_like(y), alpha, shift, log_weight)
    target = base + torch.remainder(y - base, TWO_PI)  # in [lift(0), lift(0) + 2π]
    lo, hi = torch.zeros_like(y), torch.full_like(y, TWO_PI)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        below = _ncp_lift(mid, alpha, shift, log_weight) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    x = 0.5 * (lo + hi)
    # one Newton step polishes the last bits; the bracket keeps it safe
    slope = torch.exp(_ncp_log_slope(x, alpha, shift, log_weight))
    step = (_ncp_lift(x, alpha, shift, log_weight) - target) / slope
    return torch.clamp(x - step, lo, hi)


def ncp_inverse(y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`ncp_forward`: ``(x ∈ [0, 2π] (...), log dx/dy (...))``.

    The root is found without autograd; the log-det is differentiable in ``params`` at the root.
    """
    alpha, shift, log_weight = _ncp_split(params)
    x = _ncp_solve(y.detach(), alpha.detach(), shift.detach(), log_weight.detach())
    return x, -_ncp_log_slope(x, alpha, shift, log_weight)


# ----------------------------------------------------------------------------- circular spline

def circular_spline_n_params(bins: int) -> int:
    """Raw parameters per element of a K-bin circular spline: K widths, K heights, K knot slopes."""
    return 3 * bins


def _knot_grid(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes ``(..., K)`` and knots ``(..., K + 1)`` partitioning [0, 2π], from logits ``(..., K)``;
    every bin is at least MIN_BIN·2π wide and the end knots are exactly 0 and 2π."""
    k = logits.shape[-1]
    sizes = TWO_PI * (MIN_BIN + (1.0 - k * MIN_BIN) * softmax(logits, dim=-1))
    inner = cumsum_last(sizes)[..., :-1]
    knots = torch.cat([torch.zeros_like(sizes[..., :1]), inner, torch.full_like(sizes[..., :1], TWO_PI)], -1)
    return knots[..., 1:] - knots[..., :-1], knots


def _spline_bins(params: torch.Tensor, values: torch.Tensor, in_y: bool) -> tuple[torch.Tensor, ...]:
    """For each element, (x_k, w_k, y_k, h_k, d_k, d_{k+1}) of the bin holding ``values`` (searched on the
    x-knots, or the y-knots when ``in_y``)."""
    k = params.shape[-1] // 3
    if 3 * k != params.shape[-1] or k == 0:
        raise ValueError(f"circular spline params have {params.shape[-1]} entries, expected 3K for K >= 1")
    widths, x_knots = _knot_grid(params[..., :k])
    heights, y_knots = _knot_grid(params[..., k:2 * k])
    slopes = positive(params[..., 2 * k:], MIN_SLOPE)
    slopes = torch.cat([slopes, slopes[..., :1]], dim=-1)  # d_K = d_0: C¹ across 0 ≡ 2π
    knots = y_knots if in_y else x_knots
    index = torch.searchsorted(knots[..., 1:-1].contiguous(), values.unsqueeze(-1).contiguous(), right=True)

    def pick(t: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return torch.gather(t, -1, index + offset).squeeze(-1)

    return pick(x_knots), pick(widths), pick(y_knots), pick(heights), pick(slopes), pick(slopes, 1)


def circular_spline_forward(x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular rational-quadratic spline on [0, 2π]; ``x (...)``, ``params (..., 3K)``.

    In bin k, with ξ = (x − x_k)/w_k, the map of ``flows.transforms.rq_forward_in_bin``.
    Returns ``(y ∈ [0, 2π] (...), log dy/dx (...))``.
    """
    x_k, w_k, y_k, h_k, d0, d1 = _spline_bins(params, x, in_y=False)
    xi = ((x - x_k) / w_k).clamp(0.0, 1.0)
    rise, log_slope = rq_forward_in_bin(xi, h_k / w_k, h_k, d0, d1)
    return y_k + rise, log_slope


def circular_spline_inverse(y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`circular_spline_forward`: ``(x ∈ [0, 2π] (...), log dx/dy (...))`` (ξ in bin k
    from ``flows.transforms.rq_inverse_in_bin``)."""
    x_k, w_k, y_k, h_k, d0, d1 = _spline_bins(params, y, in_y=True)
    xi, log_slope = rq_inverse_in_bin(y - y_k, h_k / w_k, h_k, d0, d1)
    return x_k + xi * w_k, -log_slope


CIRCULAR_TRANSFORMS: dict[str, tuple[Transform, Transform, Callable[[int], int]]] = {
    "ncp": (ncp_forward, ncp_inverse, ncp_n_params),
    "spline": (circular_spline_forward, circular_spline_inverse, circular_spline_n_params),
}


# ----------------------------------------------------------------------------- fixed table

def _at(knots: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``knots[..., index]`` for shared ``(K + 1,)`` or per-element ``(..., K + 1)`` knots."""
    return knots[index] if knots.dim() == 1 else torch.gather(knots, -1, index)


def table_forward(x: torch.Tensor, x_knots: torch.Tensor, y_knots: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Piecewise-linear circle map through the fixed knots ``(x_k, y_k)``, increasing from 0 to 2π
    (e.g. ``flows.u1.starts.wilson_table``); ``x (..., m)``. Each knot tensor is either ``(K + 1,)``,
    shared by all elements, or ``(..., K + 1)`` with the leading shape of ``x``, one table per row.

    In bin k: y = y_k + s_k (x − x_k), s_k = (y_{k+1} − y_k)/(x_{k+1} − x_k). Returns ``(y, log s_k)``.
    """
    index = torch.searchsorted(x_knots[..., 1:-1].contiguous(), x.contiguous(), right=True)
    x0, x1 = _at(x_knots, index), _at(x_knots, index + 1)
    y0, y1 = _at(y_knots, index), _at(y_knots, index + 1)
    slope = (y1 - y0) / (x1 - x0)
    return y0 + slope * (x - x0), torch.log(slope)


def table_inverse(y: torch.Tensor, x_knots: torch.Tensor, y_knots: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`table_forward`: ``(x, log dx/dy)``."""
    return table_forward(y, y_knots, x_knots)

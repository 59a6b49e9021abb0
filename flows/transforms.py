"""Elementwise invertible maps as pure functions (no ``torch.nn``).

Every transform has the signature

    forward(x, params) -> (y, logdet)        inverse(y, params) -> (x, logdet)

where ``x``, ``y`` and ``logdet`` share one shape ``(...)`` and ``params`` has shape ``(..., P)``:
one parameter vector per element, on the last axis. ``logdet`` is log|dy/dx| (forward) or
log|dx/dy| (inverse) per element; a coupling layer sums it over its active sites.

* affine: ``P = 2``, ``params = (s, t)``, y = x·e^s + t.
* rational-quadratic spline (C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline
  Flows", NeurIPS 2019): ``P = 3K − 1`` for K bins on [−bound, bound], identity tails outside.
  All-zero parameters give the identity map for both transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(u + DERIVATIVE_OFFSET) + MIN_DERIVATIVE = 1 at u = 0, so zero parameters give slope 1.
DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) = max(x, 0) + log(1 + e^{−|x|}), elementwise, built from exp and log only.

    torch's CPU ``F.softplus`` rounds the SIMD remainder of its loop differently from the vector body, so a
    sample's value would depend on the batch it is computed in; exp and log do not. Keeping every
    sample's map independent of the batch keeps a flow ensemble independent of the proposal chunking.
    """
    return x.clamp(min=0) + torch.log(1 + torch.exp(-x.abs()))


def affine_forward(x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x·e^s + t with ``params[..., 0] = s``, ``params[..., 1] = t``; logdet = s. Shapes ``(...)``."""
    s, t = params[..., 0], params[..., 1]
    return x * torch.exp(s) + t, s


def affine_inverse(y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x = (y − t)·e^{−s}, the inverse of :func:`affine_forward`; logdet = −s. Shapes ``(...)``."""
    s, t = params[..., 0], params[..., 1]
    return (y - t) * torch.exp(-s), -s


def spline_n_params(bins: int) -> int:
    """Number of parameters per element of a K-bin rational-quadratic spline: K widths, K heights,
    K − 1 interior derivatives."""
    return 3 * bins - 1


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax along ``dim``, as exp(x − max) / Σ exp(x − max): the same function as ``torch.softmax``,
    written out because on CPUs torch's kernel is several times slower for the few bins of a spline."""
    e = torch.exp(logits - logits.amax(dim, keepdim=True).detach())
    return e / e.sum(dim, keepdim=True)


def cumsum_last(x: torch.Tensor) -> torch.Tensor:
    """Cumulative sum of ``x (..., K)`` along its last axis (the bins of a spline, the gaps of a spectrum),
    the same sequential sums as
    ``torch.cumsum(x, -1)``, computed with the bins moved to the outermost axis.

    The reason is the GPU: torch's scan along the innermost axis of memory runs badly for millions of
    rows of a few bins (the profile of ``runs/bench/flow_step_profile.py``, figures in the README's "On
    GPUs"), while a scan along the outermost axis runs one thread per row.
    On CPUs the extra copy would only cost, so they keep ``torch.cumsum``."""
    return cumsum_outer(x) if x.device.type == "cuda" else torch.cumsum(x, dim=-1)


def cumsum_outer(x: torch.Tensor) -> torch.Tensor:
    """``torch.cumsum(x, -1)`` computed as a scan along the outermost axis of a contiguous copy."""
    return torch.cumsum(x.movedim(-1, 0).contiguous(), dim=0).movedim(0, -1)


def _knots(logits: torch.Tensor, bound: float, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes ``(..., K)`` and knot positions ``(..., K + 1)`` on [−bound, bound] from unnormalised
    logits ``(..., K)`` via a softmax with a minimum bin size ``min_size`` (fraction of the interval)."""
    bins = logits.shape[-1]
    fractions = min_size + (1.0 - min_size * bins) * softmax(logits, dim=-1)
    knots = F.pad(cumsum_last(fractions), (1, 0))
    knots = 2.0 * bound * knots - bound
    # make the end knots exact so that the bin search and the tails agree to the last bit
    knots = torch.cat(
        [torch.full_like(knots[..., :1], -bound), knots[..., 1:-1], torch.full_like(knots[..., :1], bound)],
        dim=-1,
    )
    return knots[..., 1:] - knots[..., :-1], knots


def _spline_geometry(
    params: torch.Tensor, bound: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``params (..., 3K − 1)`` into widths, x-knots, heights, y-knots and knot derivatives.

    Derivatives ``(..., K + 1)``: softplus of the K − 1 interior parameters, and 1 at ±bound so
    that the spline joins the identity tails with a continuous slope.
    """
    bins = (params.shape[-1] + 1) // 3
    if 3 * bins - 1 != params.shape[-1]:
        raise ValueError(f"spline params have {params.shape[-1]} entries, expected 3K − 1 for some K")
    # one split, not three slices: its backward is one concatenation instead of three zero-filled
    # full-size gradients that are then summed (fewer kernels and bytes; the same values)
    width_logits, height_logits, slope_params = params.split([bins, bins, bins - 1], dim=-1)
    widths, x_knots = _knots(width_logits, bound, MIN_BIN_WIDTH)
    heights, y_knots = _knots(height_logits, bound, MIN_BIN_HEIGHT)
    interior = MIN_DERIVATIVE + softplus(slope_params + DERIVATIVE_OFFSET)
    ones = torch.ones_like(interior[..., :1])
    derivatives = torch.cat([ones, interior, ones], dim=-1)
    return widths, x_knots, heights, y_knots, derivatives


def _bin_index(knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index k ∈ [0, K − 1] of the bin [knots[k], knots[k+1]) holding each value; ``(...)`` int64.

    A value on an interior knot belongs to the bin to its right; the upper end to the last bin.
    """
    index = torch.searchsorted(knots.contiguous(), values.unsqueeze(-1).contiguous(), right=True)
    return (index.squeeze(-1) - 1).clamp(0, knots.shape[-1] - 2)


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(t, -1, index.unsqueeze(-1)).squeeze(-1)


def _bin_quantities(
    params: torch.Tensor, bound: float, values: torch.Tensor, search_in_y: bool
) -> tuple[torch.Tensor, ...]:
    """Per-element bin data (x_k, w_k, y_k, h_k, δ_k, δ_{k+1}) for the bin containing ``values``."""
    widths, x_knots, heights, y_knots, derivatives = _spline_geometry(params, bound)
    index = _bin_index(y_knots if search_in_y else x_knots, values)
    return (
        _gather(x_knots, index),
        _gather(widths, index),
        _gather(y_knots, index),
        _gather(heights, index),
        _gather(derivatives, index),
        _gather(derivatives, index + 1),
    )


def rq_forward_in_bin(
    xi: torch.Tensor, s: torch.Tensor, h: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic map inside one bin (Durkan et al. 2019), at ξ = (x − x_k)/w_k ∈ [0, 1] with
    bin height h, s = h/w and knot slopes d0 = δ_k, d1 = δ_{k+1}:

        y − y_k = h (s ξ² + δ_k ξ(1−ξ)) / (s + (δ_{k+1} + δ_k − 2s) ξ(1−ξ)),
        dy/dx = s² (δ_{k+1} ξ² + 2s ξ(1−ξ) + δ_k (1−ξ)²) / (s + (δ_{k+1} + δ_k − 2s) ξ(1−ξ))².

    Returns ``(y − y_k, log dy/dx)``, elementwise.
    """
    mix = xi * (1.0 - xi)
    denominator = s + (d1 + d0 - 2.0 * s) * mix
    rise = h * (s * xi * xi + d0 * mix) / denominator
    numerator = d1 * xi * xi + 2.0 * s * mix + d0 * (1.0 - xi) ** 2
    return rise, 2.0 * torch.log(s) + torch.log(numerator) - 2.0 * torch.log(denominator)


def rq_inverse_in_bin(
    delta: torch.Tensor, s: torch.Tensor, h: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`rq_forward_in_bin` at Δ = y − y_k: ξ solves a ξ² + b ξ + c = 0 with
    r = δ_{k+1} + δ_k − 2s, a = h (s − δ_k) + Δ r, b = h δ_k − Δ r, c = −s Δ; the root in [0, 1] is taken
    in the cancellation-free form ξ = 2c / (−b − √(b² − 4ac)). Returns ``(ξ, log dy/dx at ξ)``."""
    r = d1 + d0 - 2.0 * s
    a = h * (s - d0) + delta * r
    b = h * d0 - delta * r
    c = -s * delta
    discriminant = (b * b - 4.0 * a * c).clamp(min=0.0)
    xi = (2.0 * c / (-b - torch.sqrt(discriminant))).clamp(0.0, 1.0)
    return xi, rq_forward_in_bin(xi, s, h, d0, d1)[1]


def spline_forward(
    x: torch.Tensor, params: torch.Tensor, bound: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rational-quadratic spline y = g(x) on [−bound, bound], identity outside (Durkan et al. 2019).

    In bin k, with ξ = (x − x_k)/w_k, the map of :func:`rq_forward_in_bin`.
    ``x (...)``, ``params (..., 3K − 1)``; returns ``(y, log dy/dx)``, both ``(...)``.
    """
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)  # keep the unused branch finite so gradients stay finite
    x_k, w_k, y_k, h_k, d_k, d_k1 = _bin_quantities(params, bound, xc, search_in_y=False)
    xi = ((xc - x_k) / w_k).clamp(0.0, 1.0)
    rise, logdet = rq_forward_in_bin(xi, h_k / w_k, h_k, d_k, d_k1)
    return torch.where(inside, y_k + rise, x), torch.where(inside, logdet, torch.zeros_like(logdet))


def spline_inverse(
    y: torch.Tensor, params: torch.Tensor, bound: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`spline_forward`: x = g⁻¹(y) and log dx/dy, both ``(...)`` (ξ in bin k from
    :func:`rq_inverse_in_bin`)."""
    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)
    x_k, w_k, y_k, h_k, d_k, d_k1 = _bin_quantities(params, bound, yc, search_in_y=True)
    xi, log_slope = rq_inverse_in_bin(yc - y_k, h_k / w_k, h_k, d_k, d_k1)
    logdet = -log_slope
    return torch.where(inside, x_k + xi * w_k, y), torch.where(inside, logdet, torch.zeros_like(logdet))


TRANSFORMS = {
    "affine": (affine_forward, affine_inverse),
    "spline": (spline_forward, spline_inverse),
}

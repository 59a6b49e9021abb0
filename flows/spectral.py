"""Spectral maps of SU(N) matrices: class functions moved along the maximal torus (Boyda et al., PRD 103
(2021) 074504), used by the gauge-equivariant couplings of ``flows.sun.flow``.

Write W = V diag(e^{iθ}) V^{-1}. The conjugacy class is a point of the alcove
θ_1 ≥ … ≥ θ_N ≥ θ_1 − 2π, Σ_j θ_j = 0 (a fundamental domain of the Weyl group), equivalently the N
gaps between neighbouring eigenvalues on the circle, g_j = θ_j − θ_{j+1}, g_N = 2π − (θ_1 − θ_N),
Σ g = 2π (a simplex). Stick-breaking, b_1 = g_1/2π, b_k = g_k / (2π − Σ_{j<k} g_j) ∈ [0, 1]
(k ≤ N−1), maps the simplex onto a cube, where each b_k is moved by a monotone rational-quadratic
spline of [0, 1] (``flows.transforms``, endpoints fixed). Then h(W) = V diag(e^{iθ'}) V^{-1}.

Density. With Haar measure dU ∝ |Δ(θ)|² dθ dV (Weyl), Δ = Π_{i<j}(e^{iθ_i} − e^{iθ_j}), the map h
leaves V alone, so

    log|det ∂h| = Σ_k log f_k'(b_k) + Σ_k (N−2−k) log[(1 − b'_k)/(1 − b_k)] + log |Δ(θ')|²/|Δ(θ)|²

(k = 0 … N−2, the middle term from ∂g/∂b = Π_k 2π Π_{j<k}(1 − b_j)), with respect to Haar measure.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flows.transforms import cumsum_last, spline_forward, spline_inverse

TWO_PI = 2.0 * math.pi
_EPS = 1e-12
def _gather_last(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(t, -1, index)


def eig(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eig`` of ``w (..., N, N)``, computed on the CPU for CUDA tensors and copied back.

    torch has no GPU kernel for the non-Hermitian eigenproblem: on CUDA it runs MAGMA's ``geev``, one
    matrix at a time with host-device traffic per matrix, far slower for millions of 3×3 links than
    the CPU LAPACK batch. Eigenvalues and eigenvectors are the same either way (up to the phase of each
    eigenvector, which no caller depends on)."""
    if w.device.type == "cuda":
        lam, v = torch.linalg.eig(w.cpu())
        return lam.to(w.device), v.to(w.device)
    return torch.linalg.eig(w)


class SafeEig(torch.autograd.Function):
    """``torch.linalg.eig`` with a broadened eigenvector backward, safe at (nearly) degenerate spectra.

    The backward is torch's (gA = V^{-H} (diag(gλ) + (V^H gV − V^H V diag Re(V^H gV)) / E*) V^H with
    E_ij = λ_j − λ_i), except that 1/E*_ij = E_ij/|E_ij|² becomes E_ij/(|E_ij|² + η), η = ``ETA``: equal to
    torch's gradient to relative O(η/|Δλ|²) for eigenvalue gaps |Δλ| ≫ √η = 1e-3, and bounded by
    1/(2√η) instead of infinite (NaN at an exact degeneracy) as the gap closes. Under Haar measure a gap
    below 1e-3 has probability O(1e-9) per matrix, so training gradients are unchanged in practice.
    """

    ETA = 1e-6

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam, v = eig(w)
        ctx.save_for_backward(lam, v)
        return lam, v

    @staticmethod
    def backward(ctx: Any, g_lam: torch.Tensor | None, g_v: torch.Tensor | None) -> torch.Tensor:
        lam, v = ctx.saved_tensors
        vh = v.mH
        inner = torch.zeros_like(v) if g_v is None else vh @ g_v
        inner = inner - vh @ (v * inner.real.diagonal(dim1=-2, dim2=-1).unsqueeze(-2))
        e = lam.unsqueeze(-2) - lam.unsqueeze(-1)                          # E_ij = λ_j − λ_i
        inner = inner * (e / (e.abs() ** 2 + SafeEig.ETA))
        diag = torch.zeros_like(lam) if g_lam is None else g_lam
        inner = inner - torch.diag_embed(inner.diagonal(dim1=-2, dim2=-1)) + torch.diag_embed(diag)
        return torch.linalg.solve(vh, inner @ vh)


def eigen_alcove(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Alcove angles θ ``(..., N)`` (descending, Σθ = 0, θ_1 − θ_N ≤ 2π) and eigenvectors V ``(..., N, N)``
    (column j belongs to e^{iθ_j}) of SU(N) matrices ``w (..., N, N)``; the eigendecomposition is
    :class:`SafeEig`, whose gradients stay finite at degenerate spectra."""
    lam, v = SafeEig.apply(w) if torch.is_grad_enabled() and w.requires_grad else eig(w)
    phi = torch.angle(lam)
    n = phi.shape[-1]
    m = torch.round(phi.sum(-1, keepdim=True) / TWO_PI)              # Σφ = 2π m since det = 1
    order = torch.argsort(phi, dim=-1, descending=True)
    phi = _gather_last(phi, order)
    rank = torch.arange(n, device=w.device)
    # m > 0: the m largest angles move down by 2π; m < 0: the |m| smallest move up by 2π
    phi = phi - TWO_PI * (rank < m).to(phi.dtype) + TWO_PI * (rank >= n + m).to(phi.dtype)
    resort = torch.argsort(phi, dim=-1, descending=True)
    order = _gather_last(order, resort)
    theta = _gather_last(phi, resort)
    v = torch.gather(v, -1, order.unsqueeze(-2).expand(v.shape))
    return theta, v


def alcove_to_sticks(theta: torch.Tensor) -> torch.Tensor:
    """Stick-breaking fractions b ``(..., N−1)`` in [0, 1] of alcove angles ``theta (..., N)``."""
    gaps = theta[..., :-1] - theta[..., 1:]
    used = cumsum_last(gaps) - gaps                                   # Σ_{j<k} g_j
    return (gaps / (TWO_PI - used).clamp(min=_EPS)).clamp(0.0, 1.0)


def sticks_to_alcove(b: torch.Tensor) -> torch.Tensor:
    """Inverse of ``alcove_to_sticks``: alcove angles ``(..., N)`` from fractions ``b (..., N−1)``."""
    remaining = TWO_PI * torch.cumprod(torch.cat([torch.ones_like(b[..., :1]), 1.0 - b[..., :-1]], -1), -1)
    gaps = b * remaining
    n = b.shape[-1] + 1
    weights = torch.arange(n - 1, 0, -1, dtype=b.dtype, device=b.device)   # N−1−j for j = 0 … N−2
    first = (weights * gaps).sum(-1, keepdim=True) / n
    return torch.cat([first, first - cumsum_last(gaps)], dim=-1)


class _LogChord(torch.autograd.Function):
    """2 log(2 sin(d/2)) (clamped at log ``_EPS``) of angle differences d ∈ [0, 2π]; the backward is the
    derivative of log(4 sin²(d/2) + η), η = ``ETA``: exact to relative O(η/d²), bounded by 1/(2√η) as
    d → 0 where the true derivative cot(d/2) diverges (the divergences of the two Haar densities in a
    spectral log-det cancel, but only after large float32 round-off)."""

    ETA = 1e-10

    @staticmethod
    def forward(ctx: Any, diff: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(diff)
        return 2.0 * torch.log((2.0 * torch.sin(0.5 * diff)).clamp(min=_EPS))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (diff,) = ctx.saved_tensors
        chord2 = 4.0 * torch.sin(0.5 * diff) ** 2
        return grad * 2.0 * torch.sin(diff) / (chord2 + _LogChord.ETA)


def log_haar_density(theta: torch.Tensor) -> torch.Tensor:
    """log |Δ(e^{iθ})|² = Σ_{i<j} log 4 sin²((θ_i − θ_j)/2) for alcove angles ``(..., N)``; ``(...)``.
    Gradients stay finite at coinciding angles (``_LogChord``)."""
    n = theta.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=theta.device)
    diff = theta[..., i] - theta[..., j]
    return _LogChord.apply(diff).sum(-1)


def stick_basis(b: torch.Tensor, k_basis: int) -> torch.Tensor:
    """The features φ_j(b) = cos(jπb), j = 0 … K−1, of stick fractions ``b (...)``: ``(..., K)``."""
    j = torch.arange(k_basis, dtype=b.dtype, device=b.device)
    return torch.cos(math.pi * j * b.unsqueeze(-1))


def _conditioned(params: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Σ_j φ_j(b_prev) params[..., j, :] ``(..., m, P)`` for ``params (..., m, K, P)`` and the sticks before
    them ``previous (..., m)``."""
    phi = stick_basis(previous, params.shape[-2])                    # (..., m, K)
    return (phi.unsqueeze(-1) * params).sum(-2)


def conditional_params(params: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The spline parameters ``(..., N−1, P)`` of each stick of an autoregressive stick map:
    stick k > 0 uses Σ_j φ_j(b_{k−1}) params[..., k, j, :] (``stick_basis`` of the stick before it),
    stick 0 uses params[..., 0, 0, :]. ``params (..., N−1, K, P)``, ``b (..., N−1)`` the input sticks."""
    first = params[..., :1, 0, :]
    if b.shape[-1] == 1:
        return first
    return torch.cat([first, _conditioned(params[..., 1:, :, :], b[..., :-1])], dim=-2)


def _move_sticks(b: torch.Tensor, params: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sticks ``b (..., N−1)`` moved by per-stick splines of [0, 1]: ``params (..., N−1, P)`` (each stick
    on its own) or ``(..., N−1, K, P)`` (autoregressive, ``conditional_params``; the inverse recovers the
    sticks in order). Returns the new sticks and log|db'/db| per stick ``(..., N−1)``."""
    if params.dim() == b.dim() + 1:
        spline = spline_inverse if inverse else spline_forward
        y, log_slope = spline(2.0 * b - 1.0, params, bound=1.0)
        return (0.5 * (y + 1.0)).clamp(0.0, 1.0), log_slope
    if not inverse:
        return _move_sticks(b, conditional_params(params, b), inverse=False)
    found: list[torch.Tensor] = []
    slopes: list[torch.Tensor] = []
    for k in range(b.shape[-1]):
        if k == 0:
            stick_params = params[..., :1, 0, :]
        else:
            stick_params = _conditioned(params[..., k:k + 1, :, :], found[-1])
        stick, log_slope = _move_sticks(b[..., k:k + 1], stick_params, inverse=True)
        found.append(stick)
        slopes.append(log_slope)
    return torch.cat(found, dim=-1), torch.cat(slopes, dim=-1)


def spectral_map(theta: torch.Tensor, params: torch.Tensor, inverse: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move alcove angles ``theta (..., N)`` by splines on the stick fractions: ``params (..., N−1, P)``
    moves each stick on its own, ``params (..., N−1, K, P)`` moves stick k by a spline whose parameters
    depend on the stick before it (``conditional_params``), which the one-plaquette densities of SU(N ≥ 3)
    need (``flows.sun.starts``); the Jacobian stays triangular, so the log-det formula is unchanged.

    Returns the new angles ``(..., N)`` and log|det| of the induced map of SU(N) with respect to Haar
    measure ``(...)`` (module docstring); ``inverse`` applies the inverse map and its log|det|.
    """
    n = theta.shape[-1]
    b = alcove_to_sticks(theta)
    b_new, log_slope = _move_sticks(b, params, inverse)
    theta_new = sticks_to_alcove(b_new)
    mult = torch.arange(n - 2, -1, -1, dtype=theta.dtype, device=theta.device)   # N−2−k
    top = 1.0 - max(_EPS, torch.finfo(b.dtype).eps)                     # 1 − 1e-12 rounds to 1 in float32
    stick = (mult * (torch.log1p(-b_new.clamp(max=top)) - torch.log1p(-b.clamp(max=top)))).sum(-1)
    logdet = log_slope.sum(-1) + stick + log_haar_density(theta_new) - log_haar_density(theta)
    return theta_new, logdet


def conjugation_update(v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """M = V diag(e^{iδ}) V^{-1} for ``v (..., N, N)``, ``delta (..., N)``: M = h(W) W^{-1} when
    W = V diag(e^{iθ}) V^{-1} and h(W) = V diag(e^{i(θ+δ)}) V^{-1}."""
    phase = torch.polar(torch.ones_like(delta), delta).to(v.dtype)
    return torch.linalg.solve(v, v * phase.unsqueeze(-2), left=False)

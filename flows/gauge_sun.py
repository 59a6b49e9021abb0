"""Gauge-equivariant flows for SU(N) links in D = 2, 3, 4 with spectral couplings (Boyda et al., PRD 103
(2021) 074504; the 4D layer pattern in the spirit of Abbott et al. 2022/2023 for 4D SU(3)).

Coupling layer. A layer (μ, ν, offset) updates the links U_μ(x) on the sites x_ν ≡ ``offset`` (mod 4)
(``flows.gauge_sun_masks``: masks, schedule, and why the map is triangular). Each updated link is the
first link of its *active* loop W(x) = U_μ(x) S(x), the plaquette P_μν(x), while S(x) holds only links
that the layer does not touch. With a conjugation-equivariant map h of SU(N),

    U_μ(x) → h(W) W^{-1} U_μ(x),     so that the new active loop is h(W).

Frozen plaquettes (those that hold no updated link, in all D(D−1)/2 planes) feed a periodic CNN
(``flows.nets.ConvNet``, D = 2 … 4) through their gauge-invariant traces Re, Im tr P^k / N
(k = 1 … N−1); its output at x parametrises h for the loop W(x). The update depends on the links only
through gauge-covariant W and invariant traces, so f(g·U) = g·f(U). In D = 2 this is the row pattern of
Kanwar et al. (2020) and the layers are those of the original 2D-only module, bit for bit.

Spectral map. Write W = V diag(e^{iθ}) V^{-1}. The conjugacy class is a point of the alcove
θ_1 ≥ … ≥ θ_N ≥ θ_1 − 2π, Σ_j θ_j = 0 (a fundamental domain of the Weyl group), equivalently the N
gaps between neighbouring eigenvalues on the circle, g_j = θ_j − θ_{j+1}, g_N = 2π − (θ_1 − θ_N),
Σ g = 2π (a simplex). Stick-breaking, b_1 = g_1/2π, b_k = g_k / (2π − Σ_{j<k} g_j) ∈ [0, 1]
(k ≤ N−1), maps the simplex onto a cube, where each b_k is moved by a monotone rational-quadratic
spline of [0, 1] (``flows.transforms``, endpoints fixed). Then h(W) = V diag(e^{iθ'}) V^{-1}.

Density. With Haar measure dU ∝ |Δ(θ)|² dθ dV (Weyl), Δ = Π_{i<j}(e^{iθ_i} − e^{iθ_j}), the map h
leaves V alone, so per active loop

    log|det ∂h| = Σ_k log f_k'(b_k) + Σ_k (N−2−k) log[(1 − b'_k)/(1 − b_k)] + log |Δ(θ')|²/|Δ(θ)|²

(k = 0 … N−2, the middle term from ∂g/∂b), and W → h(W) W^{-1} U at fixed S moves U by the same
Haar Jacobian. The prior is Haar on every link, so log q(U) = −Σ_layers log|det|.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flows.config import MappingConfig
from flows.gauge_sun_masks import (
    OFFSET_ORDERS,
    layer_masks,
    layer_schedule,
    oriented_plaquette,
    planes,
    plaquette_matrices,
)
from flows.model import Flow
from flows.nets import ACTIVATIONS, ConvNet, reset_parameters
from flows.transforms import spline_forward, spline_inverse, spline_n_params
from lattice.sun import complex_dtype, haar, real_dtype, trace

TWO_PI = 2.0 * math.pi
_EPS = 1e-12


@dataclass(frozen=True)
class SUNFlowConfig(MappingConfig):
    """Architecture of an SU(N) spectral flow: ``n_layers`` couplings (multiples of 4·D visit every link
    equally often), conditioner CNN ``hidden``/``kernel_size``/``activation``, ``bins`` spline bins, and
    ``offset_order``, the cycle of mask offsets: ``"increasing"`` (0, 1, 2, 3) or ``"decreasing"``
    (0, 3, 2, 1), in which each layer's passive plaquettes (rows o − 1) are ones no earlier layer of the
    pass has shaped yet (``flows.gauge_sun_masks.layer_schedule``)."""

    n_layers: int = 16
    hidden: tuple[int, ...] = (8, 8)
    kernel_size: int = 3
    activation: str = "tanh"
    bins: int = 8
    offset_order: str = "increasing"

    # the scalar-flow keys ``coupling`` and ``bound`` are accepted and ignored
    _accepts = "SU(N) flows accept"
    _ignored = ("coupling", "bound")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.n_layers < 0 or self.bins < 1:
            raise ValueError(f"flow.n_layers = {self.n_layers}, flow.bins = {self.bins}: expected >= 0, >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"flow.kernel_size = {self.kernel_size}: expected an odd positive integer")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"flow.activation = {self.activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if self.offset_order not in OFFSET_ORDERS:
            accepted = sorted(OFFSET_ORDERS)
            raise ValueError(f"flow.offset_order = {self.offset_order!r}: expected one of {accepted}")


# ----------------------------------------------------------------------------- spectral geometry

def _gather_last(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(t, -1, index)


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
        lam, v = torch.linalg.eig(w)
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
    lam, v = SafeEig.apply(w) if torch.is_grad_enabled() and w.requires_grad else torch.linalg.eig(w)
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
    used = torch.cumsum(gaps, dim=-1) - gaps                          # Σ_{j<k} g_j
    return (gaps / (TWO_PI - used).clamp(min=_EPS)).clamp(0.0, 1.0)


def sticks_to_alcove(b: torch.Tensor) -> torch.Tensor:
    """Inverse of ``alcove_to_sticks``: alcove angles ``(..., N)`` from fractions ``b (..., N−1)``."""
    remaining = TWO_PI * torch.cumprod(torch.cat([torch.ones_like(b[..., :1]), 1.0 - b[..., :-1]], -1), -1)
    gaps = b * remaining
    n = b.shape[-1] + 1
    weights = torch.arange(n - 1, 0, -1, dtype=b.dtype, device=b.device)   # N−1−j for j = 0 … N−2
    first = (weights * gaps).sum(-1, keepdim=True) / n
    return torch.cat([first, first - torch.cumsum(gaps, dim=-1)], dim=-1)


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


def spectral_map(theta: torch.Tensor, params: torch.Tensor, inverse: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move alcove angles ``theta (..., N)`` by splines on the stick fractions, ``params (..., N−1, P)``.

    Returns the new angles ``(..., N)`` and log|det| of the induced map of SU(N) with respect to Haar
    measure ``(...)`` (module docstring); ``inverse`` applies the inverse map and its log|det|.
    """
    n = theta.shape[-1]
    b = alcove_to_sticks(theta)
    spline = spline_inverse if inverse else spline_forward
    y, log_slope = spline(2.0 * b - 1.0, params, bound=1.0)
    b_new = (0.5 * (y + 1.0)).clamp(0.0, 1.0)
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


# ----------------------------------------------------------------------------- layers

def loop_features(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Channels Re, Im tr P^k / N (k = 1 … max(1, N−1)) of plaquettes ``p (B, n_planes, *L, N, N)``,
    zero off ``mask (n_planes, *L)``; returns ``(B, 2·n_planes·max(1, N−1), *L)`` in the real dtype of
    ``p``, ordered plane by plane."""
    n = p.shape[-1]
    feats, power = [], p
    for k in range(max(1, n - 1)):
        if k > 0:
            power = power @ p
        tr = trace(power) / n
        feats.append(torch.stack([tr.real * mask, tr.imag * mask], dim=2))   # (B, n_planes, 2, *L)
    return torch.stack(feats, dim=2).flatten(1, 3)                          # plane, power, re/im


class SUNGaugeCoupling(nn.Module):
    """One spectral coupling on SU(N) links ``(B, D, *L, N, N)``, D = 2 … 4: updates U_μ(x) for
    x_ν ≡ ``offset`` (mod 4) through the active loops P_μν(x) (``flows.gauge_sun_masks``)."""

    def __init__(self, shape: Sequence[int], n: int, mu: int, nu: int, offset: int, config: SUNFlowConfig
                 ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.dim = len(self.shape)
        if not 2 <= self.dim <= 4:
            raise ValueError(f"SU(N) spectral couplings support D = 2, 3, 4, got lattice shape {self.shape}")
        self.n, self.mu, self.nu, self.offset, self.bins = n, mu, nu, offset, config.bins
        active, frozen = layer_masks(self.shape, mu, nu, offset)
        self.register_buffer("frozen_mask", frozen.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("active_index", torch.nonzero(active.flatten()).squeeze(1), persistent=False)
        n_feat = 2 * max(1, n - 1) * len(planes(self.dim))
        self.net = ConvNet(self.dim, n_feat, (n - 1) * spline_n_params(config.bins), config.hidden,
                           config.kernel_size, config.activation)

    def _couple(self, u: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        b = u.shape[0]
        if self.active_index.numel() == 0:       # offsets 2, 3 on an extent-2 axis: nothing to update
            return u, torch.zeros(b, dtype=real_dtype(u.dtype), device=u.device)
        p = plaquette_matrices(u)
        feats = loop_features(p, self.frozen_mask.to(real_dtype(u.dtype)))
        params = self.net(feats).flatten(2).index_select(2, self.active_index).transpose(1, 2)
        params = params.reshape(b, -1, self.n - 1, spline_n_params(self.bins))
        loops = oriented_plaquette(p, self.mu, self.nu)                     # starts with U_μ(x)
        w = loops.flatten(1, self.dim).index_select(1, self.active_index)   # (B, n_active, N, N)
        theta, v = eigen_alcove(w)
        theta_new, logdet = spectral_map(theta, params.to(theta.dtype), inverse)
        m = conjugation_update(v, theta_new - theta)
        links = u[:, self.mu].flatten(1, self.dim)
        moved = links.index_copy(1, self.active_index, m @ links.index_select(1, self.active_index))
        out = u.clone()
        out[:, self.mu] = moved.reshape(u[:, self.mu].shape)
        return out, logdet.sum(1)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u (B, D, *L, N, N) -> (u', log|det ∂u'/∂u| (B,))`` with respect to Haar measure."""
        return self._couple(u, inverse=False)

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse map and its log|det| ``(B,)``."""
        return self._couple(u, inverse=True)


class SUNHaarPrior:
    """Independent Haar-random SU(N) links ``(D, *L, N, N)``; log r = 0 (density w.r.t. normalised Haar)."""

    def __init__(self, shape: Sequence[int], n: int) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.n = n

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.complex64,
               device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` draws ``(n, D, *L, N, N)`` from ``generator``; a real dtype maps to its complex partner."""
        device = generator.device if device is None else device
        return haar((n, *self.shape[:-2]), self.n, generator, complex_dtype(dtype), device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Zeros ``(B,)`` in the real dtype of ``z``."""
        return torch.zeros(z.shape[0], dtype=real_dtype(z.dtype), device=z.device)


class SUNFlow(Flow):
    """A :class:`flows.model.Flow` on SU(N) links ``(D, *L, N, N)`` with the Haar prior.

    ``dtype`` is the complex dtype of the links it produces (complex64 for float32 weights)."""

    def __init__(self, field_shape: Sequence[int], n: int, layers: nn.ModuleList,
                 config: SUNFlowConfig | None = None) -> None:
        super().__init__(field_shape, layers, config)
        self.prior = SUNHaarPrior(field_shape, n)

    @property
    def dtype(self) -> torch.dtype:
        return complex_dtype(self._anchor.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) for links ``x (B, D, *L, N, N)`` through the inverse layers; real ``(B,)``."""
        total = torch.zeros(x.shape[0], dtype=real_dtype(x.dtype), device=x.device)
        for layer in reversed(self.layers):
            x, logdet = layer.inverse(x)
            total = total + logdet
        return self.prior.log_prob(x) + total


def build_sun_flow(
    theory: Any,
    config: SUNFlowConfig | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SUNFlow:
    """A spectral gauge-equivariant flow for a ``lattice.wilson.SUN`` theory in D = 2, 3 or 4 (calling
    convention of ``flows.model.build_flow``). Layer i updates (μ, ν, offset) of
    ``flows.gauge_sun_masks.layer_schedule`` (D = 2: direction i mod 2 on the rows ≡ (i // 2) mod 4).
    Initial weights come from ``generator`` (default: seeded 0); the last conv of every conditioner is
    zero, so a new flow is the identity and samples the Haar measure."""
    if not isinstance(config, SUNFlowConfig):
        config = SUNFlowConfig.from_mapping(config)
    if getattr(theory, "name", None) != "sun" or not 2 <= len(theory.shape) <= 4:
        raise ValueError(f"build_sun_flow needs an SU(N) theory in D = 2 … 4, got "
                         f"{getattr(theory, 'name', theory)!r} with shape {getattr(theory, 'shape', None)}")
    schedule = layer_schedule(len(theory.shape), config.n_layers, config.offset_order)
    layers = nn.ModuleList(SUNGaugeCoupling(theory.shape, theory.N, mu, nu, offset, config)
                           for mu, nu, offset in schedule)
    flow = SUNFlow(theory.field_shape, theory.N, layers, config)
    reset_parameters(flow, generator if generator is not None else torch.Generator().manual_seed(0))
    return flow.to(device=device, dtype=dtype)

"""Gauge-equivariant flows for SU(N) links in D = 2, 3, 4 with spectral couplings (Boyda et al., PRD 103
(2021) 074504; the 4D layer pattern in the spirit of Abbott et al. 2022/2023 for 4D SU(3)).

Coupling layer. A layer (μ, ν, offset) updates the links U_μ(x) on the sites x_ν ≡ ``offset`` (mod 4)
(``flows.masks``: masks, schedule, and why the map is triangular). Each updated link is the
first link of its *active* loop W(x) = U_μ(x) S(x), the plaquette P_μν(x), while S(x) holds only links
that the layer does not touch. With a conjugation-equivariant map h of SU(N),

    U_μ(x) → h(W) W^{-1} U_μ(x),     so that the new active loop is h(W).

Frozen plaquettes (those that hold no updated link, in all D(D−1)/2 planes) feed a periodic CNN
(``flows.nets.ConvNet``, D = 2 … 4) through their gauge-invariant traces Re, Im tr P^k / N
(k = 1 … N−1); its output at x parametrises h for the loop W(x). The update depends on the links only
through gauge-covariant W and invariant traces, so f(g·U) = g·f(U). In D = 2 this is the row pattern of
Kanwar et al. (2020) and the layers are those of the original 2D-only module, bit for bit.

Spectral map (``flows.spectral``): h moves the eigenvalue phases of W by splines on stick-breaking
coordinates of the alcove (with ``stick_basis`` K > 1 the spline of each stick after the first depends
on the stick before it, ``flows.sun.params``) and leaves the eigenvectors alone; W → h(W) W^{-1} U at
fixed S moves U by the same Haar Jacobian as h moves W. The prior is Haar on every link, so
log q(U) = −Σ_layers log|det|.

Start. ``init = "wilson"`` (``flows.sun.starts``) sets each layer that is the first to shape its
active plaquettes to the spline that best maps a Haar loop to the one-plaquette Wilson density
∝ e^{(β/N) Re tr W}; at strong coupling this is the flow that is exact to first order in β.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flows.masks import (
    layer_masks,
    layer_schedule,
    oriented_plaquette,
    planes,
    plaquette_matrices,
)
from flows.model import Flow
from flows.nets import ConvNet, reset_parameters
from flows.spectral import conjugation_update, eigen_alcove, spectral_map
from flows.sun.config import SUNFlowConfig
from flows.sun.params import n_stick_params, stick_params
from flows.sun.starts import start_at_wilson
from lattice.sun import complex_dtype, haar, real_dtype, trace
from lattice.theories import Theory
from lattice.wilson import SUN


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
    x_ν ≡ ``offset`` (mod 4) through the active loops P_μν(x) (``flows.masks``)."""

    def __init__(self, shape: Sequence[int], n: int, mu: int, nu: int, offset: int, config: SUNFlowConfig
                 ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.dim = len(self.shape)
        if not 2 <= self.dim <= 4:
            raise ValueError(f"SU(N) spectral couplings support D = 2, 3, 4, got lattice shape {self.shape}")
        self.n, self.mu, self.nu, self.offset, self.bins = n, mu, nu, offset, config.bins
        self.stick_basis = config.stick_basis
        active, frozen = layer_masks(self.shape, mu, nu, offset)
        self.register_buffer("frozen_mask", frozen.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("active_index", torch.nonzero(active.flatten()).squeeze(1), persistent=False)
        n_feat = 2 * max(1, n - 1) * len(planes(self.dim))
        self.net = ConvNet(self.dim, n_feat, n_stick_params(n, config.bins, self.stick_basis), config.hidden,
                           config.kernel_size, config.activation)

    def _couple(self, u: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        b = u.shape[0]
        if self.active_index.numel() == 0:       # offsets 2, 3 on an extent-2 axis: nothing to update
            return u, torch.zeros(b, dtype=real_dtype(u.dtype), device=u.device)
        p = plaquette_matrices(u)
        feats = loop_features(p, self.frozen_mask.to(real_dtype(u.dtype)))
        params = self.net(feats).flatten(2).index_select(2, self.active_index).transpose(1, 2)
        params = stick_params(params, self.n, self.bins, self.stick_basis)
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
    theory: Theory,
    config: SUNFlowConfig | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SUNFlow:
    """A spectral gauge-equivariant flow for a ``lattice.wilson.SUN`` theory in D = 2, 3 or 4 (calling
    convention of ``flows.model.build_flow``). Layer i updates (μ, ν, offset) of
    ``flows.masks.layer_schedule`` (D = 2: direction i mod 2 on the rows ≡ (i // 2) mod 4).
    Initial weights come from ``generator`` (default: seeded 0); the last conv of every conditioner is
    zero, so a new flow is the identity and samples the Haar measure, unless ``config.init = "wilson"``
    gives the shaping layers the one-plaquette Wilson spline at ``theory.beta``
    (``flows.sun.starts``)."""
    config = SUNFlowConfig.of(config)
    if not isinstance(theory, SUN) or not 2 <= len(theory.shape) <= 4:
        raise ValueError(f"build_sun_flow needs an SU(N) theory in D = 2 … 4, got "
                         f"{getattr(theory, 'name', theory)!r} with shape {getattr(theory, 'shape', None)}")
    schedule = layer_schedule(len(theory.shape), config.n_layers, config.offset_order)
    layers = nn.ModuleList(SUNGaugeCoupling(theory.shape, theory.N, mu, nu, offset, config)
                           for mu, nu, offset in schedule)
    flow = SUNFlow(theory.field_shape, theory.N, layers, config)
    reset_parameters(flow, generator)
    if config.init == "wilson":
        start_at_wilson(flow.layers, theory.shape, theory.N, float(theory.beta), config.bins,
                        config.stick_basis)
    return flow.to(device=device, dtype=dtype)

"""Layers for real scalar fields ``(B, *L)`` in D = 1..4: masked (checkerboard) couplings and a
translation-invariant linear layer in momentum space (:class:`FourierScaling`).

A layer splits the sites into a frozen half F and an active half A (a checkerboard colour). The
frozen values, with the active ones zeroed, go through a periodic CNN (``flows.nets.ConvNet``) that
outputs one parameter vector per site; the active sites are transformed elementwise with those
parameters (``flows.transforms``), the frozen ones are copied:

    y_F = x_F,   y_A = g(x_A; θ(x_F)),   log|det ∂y/∂x| = Σ_{a∈A} log|g'(x_a; θ(x_F))|.

The Jacobian is triangular, so the log-det is exact (Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515).

Z₂ (``z2=True``): the layer commutes with φ → −φ. With R the parameter reflection for which
g(x; Rθ) = −g(−x; θ) (affine (s, t) → (s, −t); spline: widths, heights and interior derivatives each
reversed), the conditioner is symmetrised, θ(c) = [N(c) + R N(−c)]/2, so θ(−c) = R θ(c) and
y(−x) = −y(x): shift odd and scale even in the frozen field. A normal prior and the linear
:class:`FourierScaling` are Z₂-equivariant too, so a flow of these layers has q(−φ) = q(φ) exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flows.nets import ConvNet
from flows.transforms import TRANSFORMS, spline_n_params
from lattice.geometry import checkerboard


def n_params(coupling: str, bins: int) -> int:
    """Parameters per active site for a transform kind (``"affine"`` or ``"spline"``)."""
    if coupling == "affine":
        return 2
    if coupling == "spline":
        return spline_n_params(bins)
    raise ValueError(f"coupling {coupling!r} is not one of ['affine', 'spline']")


def reflect_params(params: torch.Tensor, coupling: str, bins: int, dim: int = -1) -> torch.Tensor:
    """R θ along axis ``dim`` of ``params``: the parameters of the point-reflected map −g(−x; θ).
    Affine (s, t) → (s, −t); spline: the K widths, K heights and K − 1 interior derivatives each in
    reverse order."""
    if coupling == "affine":
        s, t = params.split(1, dim)
        return torch.cat([s, -t], dim)
    blocks = params.split([bins, bins, bins - 1], dim)
    return torch.cat([b.flip(dim) for b in blocks], dim)


class MaskedCoupling(nn.Module):
    """One checkerboard coupling layer on fields ``(B, *L)``.

    ``parity`` picks the active colour: sites with (Σ_μ x_μ) mod 2 == ``parity`` are transformed.
    ``forward(x) -> (y, logdet (B,))`` and ``inverse(y) -> (x, logdet (B,))``, where the inverse's
    logdet is log|det ∂x/∂y| = −(forward logdet at x).
    """

    def __init__(
        self,
        shape: Sequence[int],
        parity: int,
        coupling: str = "affine",
        hidden: Sequence[int] = (8, 8),
        kernel_size: int = 3,
        activation: str = "tanh",
        bins: int = 8,
        bound: float = 5.0,
        z2: bool = False,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.coupling = coupling
        self.z2 = z2
        self.bins = bins
        self.bound = float(bound)
        self.n_params = n_params(coupling, bins)
        active = checkerboard(self.shape, parity)
        self.register_buffer("frozen_mask", (~active).to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("active_index", torch.nonzero(active.flatten()).squeeze(1), persistent=False)
        self.net = ConvNet(len(self.shape), 1, self.n_params, hidden, kernel_size, activation)

    def _params(self, frozen: torch.Tensor) -> torch.Tensor:
        """Conditioner output at the active sites, ``(B, V/2, P)``, from the frozen field ``(B, *L)``."""
        masked = (frozen * self.frozen_mask.to(frozen.dtype)).unsqueeze(1)
        if self.z2:
            plus, minus = self.net(torch.cat([masked, -masked])).chunk(2)
            out = 0.5 * (plus + reflect_params(minus, self.coupling, self.bins, dim=1))
        else:
            out = self.net(masked)
        # sites-major and contiguous before the gather: a row gather, and the transforms then work on a
        # contiguous last axis (a strided one makes softmax and friends several times slower on CPUs)
        return out.flatten(2).transpose(1, 2).contiguous().index_select(1, self.active_index)

    def _couple(self, x: torch.Tensor, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
        params = self._params(x)
        flat = x.flatten(1)
        x_active = flat.index_select(1, self.active_index)
        fn = TRANSFORMS[self.coupling][direction]
        kwargs = {"bound": self.bound} if self.coupling == "spline" else {}
        y_active, logdet = fn(x_active, params, **kwargs)
        y = flat.index_copy(1, self.active_index, y_active)
        return y.reshape(x.shape), logdet.sum(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, *L) -> (y (B, *L), log|det ∂y/∂x| (B,))``."""
        return self._couple(x, 0)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y (B, *L) -> (x (B, *L), log|det ∂x/∂y| (B,))``."""
        return self._couple(y, 1)


class FourierScaling(nn.Module):
    """Translation-invariant linear layer y = C x, with C circulant and symmetric: in momentum space
    ỹ_k = e^{ρ_k} x̃_k, ρ_k = ρ_{−k} learned (one per momentum), so that
    log|det C| = Σ_k ρ_k (per configuration; independent of x).

    Put right after the normal prior it makes a learned free-field (Gaussian) prior with any
    two-point function ⟨φ̃_k φ̃_{−k}⟩ ∝ e^{2ρ_k}, which captures the long-range correlations near
    criticality that local couplings learn slowly. ρ = 0 at initialisation (identity).
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        self._dims = tuple(range(len(self.shape)))

    def _rho(self) -> torch.Tensor:
        """ρ_k = (r_k + r_{−k})/2; flip then roll by one maps index k to −k mod L on every axis."""
        r = self.log_scale
        reflected = torch.roll(torch.flip(r, self._dims), shifts=(1,) * len(self._dims), dims=self._dims)
        return 0.5 * (r + reflected)

    def _scale(self, x: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        rho = self._rho().to(x.dtype)
        lattice_dims = tuple(range(1, x.dim()))
        y = torch.fft.ifftn(
            torch.fft.fftn(x, dim=lattice_dims) * torch.exp(sign * rho), dim=lattice_dims
        ).real
        return y, (sign * rho.sum()).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, *L) -> (C x, log|det C| (B,))``."""
        return self._scale(x, 1.0)

    def resize_parameter(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``log_scale`` learned on another lattice ``(*L')`` carried to this one ``(*L)``: r as a function
        of the momentum p = 2πk/L, interpolated linearly on the periodic grid of L' at each of this
        lattice's momenta (axis by axis). A curriculum stage at a larger L then starts from the
        two-point function the smaller one learned instead of from the identity."""
        if name != "log_scale" or value.dim() != len(self.shape):
            raise ValueError(f"cannot resize {name} of shape {tuple(value.shape)} to {self.shape}")
        out = value.detach().to(torch.float64)
        for axis, n_new in enumerate(self.shape):
            out = _periodic_interp(out, axis, n_new)
        return out.to(self.log_scale.dtype)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y (B, *L) -> (C⁻¹ y, −log|det C| (B,))``."""
        return self._scale(y, -1.0)


def _periodic_interp(values: torch.Tensor, axis: int, n_new: int) -> torch.Tensor:
    """Linear interpolation of a periodic function sampled at k = 0..n−1 (momentum 2πk/n) along
    ``axis`` to the momenta 2πj/n_new, j = 0..n_new−1."""
    n = values.shape[axis]
    pos = torch.arange(n_new, dtype=torch.float64) * (n / n_new)
    lo = torch.floor(pos).long()
    frac = (pos - lo).reshape([-1 if d == axis else 1 for d in range(values.dim())])
    a, b = values.index_select(axis, lo % n), values.index_select(axis, (lo + 1) % n)
    return a + frac * (b - a)


def coupling_stack(shape: Sequence[int], n_layers: int, **options: Any) -> nn.ModuleList:
    """``n_layers`` couplings ``MaskedCoupling(shape, parity, **options)`` whose active colour alternates
    even, odd, even, ... (Z₂-equivariant with ``z2=True``)."""
    return nn.ModuleList(MaskedCoupling(shape, i % 2, **options) for i in range(n_layers))

"""Polyakov-loop couplings for 2D U(1) flows: the finite-volume structure that plaquette couplings cannot
reach.

On an L0 × L1 torus the plaquette angles of one column x0 = c sum to a difference of Polyakov loops of
the μ = 1 links (``θ_01(x) = θ_0(x) + θ_1(x+0̂) − θ_0(x+1̂) − θ_1(x)``):

    S_c = Σ_{x1} θ_01(c, x1) = P(c + 1) − P(c),        P(c) = Σ_{x1} θ_1(c, x1)  (mod 2π).

Couplings that update μ = 0 links (``flows.u1.flow`` with ``link_directions = (0,)``) move plaquettes
within a column and leave every S_c unchanged, while the Wilson action makes each S_c the sum of L1
nearly independent plaquettes, so the target density of the loops is ≈ Π_c f(P(c+1) − P(c)) with f the
L1-fold convolution of e^{β cos θ} (Fourier coefficients (I_n(β)/I_0(β))^{L1}). Under the Haar prior the
P(c) are independent and uniform. At β = 6, L = 16 the first coefficient is 0.23, a real effect.

A Polyakov coupling of parity p updates the loops of the columns c ≡ p (mod 2), each a 1D problem
conditioned on its frozen neighbours: with u = P(c) − P(c − 1) (mod 2π) and the frozen gap
D = P(c + 1) − P(c − 1), a circular spline h(·; D) (``flows.circular``, which fixes 0 and 2π, so that
δ(u) = h(u) − u is continuous on the circle) maps u → h(u), and every link of the column moves by the
same amount,

    θ_1(c, x1) → θ_1(c, x1) + δ(u) / L1      for all x1,

so that P(c) → P(c) + δ(u). The Jacobian of θ → θ + (δ(u)/L1)·1 with u = Σ θ + const is
det(I + (δ'(u)/L1) 1 1ᵀ) = 1 + δ'(u) = h'(u). Polyakov loops are gauge invariant on the torus, so the
shift is, and f(g·U) = g·f(U); the conditioner reads (cos D, sin D) only, so the map also commutes with
translations and with the global shift P(c) → P(c) + α, a symmetry of the action.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from flows.circular import CIRCULAR_TRANSFORMS
from flows.nets import ConvNet

TWO_PI = 2.0 * math.pi


def polyakov_loops(x: torch.Tensor) -> torch.Tensor:
    """P(c) = Σ_{x1} θ_1(c, x1) of links ``x (B, 2, L0, L1)``, unreduced; ``(B, L0)``."""
    return x[:, 1].sum(dim=2)


class U1PolyakovCoupling(nn.Module):
    """Moves the Polyakov loops of the columns c ≡ ``parity`` (mod 2) (module docstring).

    ``forward(x) -> (y, log|det ∂y/∂x| (B,))`` and ``inverse(y) -> (x, log|det ∂x/∂y| (B,))`` on links
    ``(B, 2, L0, L1)``; L0 must be even. ``config`` supplies ``bins``, ``hidden`` and ``activation``
    (a pointwise conditioner: kernel size 1 along the columns).
    """

    def __init__(self, shape: tuple[int, int], parity: int, config: Any) -> None:
        super().__init__()
        extent = int(shape[0])
        if extent % 2:
            raise ValueError(f"Polyakov couplings need an even extent along direction 0, got {extent}")
        self.extent_1 = int(shape[1])
        self.register_buffer("active", torch.arange(parity, extent, 2), persistent=False)
        n_params = CIRCULAR_TRANSFORMS["spline"][2](config.bins)
        self.net = ConvNet(1, 2, n_params, config.hidden, 1, config.activation)

    def _couple(self, x: torch.Tensor, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
        loops = polyakov_loops(x)
        before = torch.roll(loops, 1, dims=1)  # P(c − 1) at c
        gap = torch.roll(loops, -1, dims=1) - before  # D(c) = P(c + 1) − P(c − 1), frozen at active c
        params = self.net(torch.stack([torch.cos(gap), torch.sin(gap)], dim=1))  # (B, n_params, L0)
        params = params.index_select(2, self.active).transpose(1, 2)
        u = torch.remainder((loops - before).index_select(1, self.active), TWO_PI)
        v, logdet = CIRCULAR_TRANSFORMS["spline"][direction](u, params)
        shift = torch.zeros_like(loops).index_copy(1, self.active, (v - u) / self.extent_1)
        moved = x[:, 1] + shift.unsqueeze(2)
        return torch.stack([x[:, 0], moved], dim=1), logdet.sum(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, 2, L0, L1) -> (y, log|det ∂y/∂x| (B,))``."""
        return self._couple(x, 0)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y (B, 2, L0, L1) -> (x, log|det ∂x/∂y| (B,))``."""
        return self._couple(y, 1)


def polyakov_stack(shape: tuple[int, int], n_layers: int, config: Any) -> list[nn.Module]:
    """``n_layers`` Polyakov couplings of alternating parity (even columns first)."""
    return [U1PolyakovCoupling(shape, i % 2, config) for i in range(n_layers)]

"""Hypercubic periodic lattices in any dimension D.

A field carries ``n_lead`` leading axes before its lattice axes, e.g. a batch of scalar fields
``(B, *L)`` has ``n_lead = 1`` and a batch of U(1) links ``(B, D, *L)`` has ``n_lead = 2``.
Lattice direction ``mu`` (0-based) is tensor axis ``n_lead + mu``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def validate_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive extents, or raise ``ValueError`` naming the bad one."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("lattice shape must have at least one extent")
    for mu, extent in enumerate(shape):
        if extent <= 0:
            raise ValueError(f"lattice extent {extent} in direction {mu} must be positive")
    return shape


def volume(shape: Sequence[int]) -> int:
    """Number of sites V = prod(L)."""
    return math.prod(shape)


class LatticeShape:
    """Mixin for a theory dataclass with a ``shape`` field (the extents L): its dimension D and its
    number of sites V."""

    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        """Dimension D = len(shape)."""
        return len(self.shape)

    @property
    def volume(self) -> int:
        """Number of sites V."""
        return volume(self.shape)


def shift(x: torch.Tensor, mu: int, step: int = 1, n_lead: int = 1) -> torch.Tensor:
    """Periodic shift: ``shift(x, mu, s)[..., n] = x[..., n + s * e_mu]``.

    So ``shift(phi, mu)`` is φ(x+μ) and ``shift(phi, mu, -1)`` is φ(x−μ).
    """
    return torch.roll(x, shifts=-step, dims=n_lead + mu)


def coordinates(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Integer site coordinates, shape ``(*L, D)``."""
    axes = [torch.arange(extent, device=device) for extent in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def parity(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Site parity (Σ_μ x_μ) mod 2, shape ``(*L,)``, dtype int64."""
    return coordinates(shape, device).sum(-1) % 2


def checkerboard(
    shape: Sequence[int], which: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean mask of the sites of parity ``which`` (0 = even, 1 = odd), shape ``(*L,)``.

    For an odd extent the two colours are not a proper 2-colouring across the boundary;
    the mask is still a valid partition of the sites.
    """
    return parity(shape, device) == which

"""Base distributions of flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class NormalPrior:
    """Independent standard normal N(0, 1) on every site of a field of shape ``L``.

    log r(z) = −½ Σ_x z_x² − (V/2) log 2π, with V = prod(L).
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.volume = math.prod(self.shape)

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``n`` draws, shape ``(n, *L)``, from ``generator`` (which must live on ``device``)."""
        device = generator.device if device is None else device
        return torch.randn((n, *self.shape), generator=generator, dtype=dtype, device=device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log r(z) for ``z (B, *L)``; returns ``(B,)``."""
        return -0.5 * (z * z).flatten(1).sum(1) - 0.5 * self.volume * math.log(2.0 * math.pi)

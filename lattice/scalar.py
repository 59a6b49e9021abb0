"""Real scalar φ⁴ theory in the convention of Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515.

    S[φ] = Σ_x [ Σ_μ φ_x (2 φ_x − φ_{x+μ} − φ_{x−μ}) + m² φ_x² + λ φ_x⁴ ]

Fields have shape ``(B, *L)``. λ = 0 is the free field, solved exactly in ``lattice.exact``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lattice.geometry import LatticeShape, shift, validate_shape


@dataclass(frozen=True)
class Phi4(LatticeShape):
    """φ⁴ theory on a periodic lattice of extents ``shape`` with bare parameters ``m2`` and ``lam``."""

    shape: tuple[int, ...]
    m2: float
    lam: float
    name: str = "phi4"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", validate_shape(self.shape))
        if self.lam < 0:
            raise ValueError(f"lam = {self.lam} must be non-negative for the action to be bounded")

    @property
    def field_shape(self) -> tuple[int, ...]:
        """Shape of one configuration, ``L``."""
        return self.shape

    def params(self) -> dict:
        """JSON-ready description, as written to the HDF5 ``theory`` attribute and the summary."""
        return {"name": self.name, "shape": list(self.shape), "m2": self.m2, "lam": self.lam}

    def random_field(
        self,
        n: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A starting field ``(n, *L)``: iid N(0, σ²) with σ² = 1/(2(2D + |m²|)), the width set by the
        site-local quadratic terms; a unit-width start puts φ on the steep λφ⁴ wall, where HMC jams."""
        sigma = (2 * (2 * self.dim + abs(self.m2))) ** -0.5
        return sigma * torch.randn((n, *self.shape), generator=generator, dtype=dtype, device=device)

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S[φ] for a batch ``phi`` of shape ``(B, *L)``; returns ``(B,)``."""
        phi2 = phi * phi
        kinetic = torch.zeros_like(phi)
        for mu in range(self.dim):
            kinetic = kinetic + phi * (2 * phi - shift(phi, mu) - shift(phi, mu, -1))
        density = kinetic + self.m2 * phi2 + self.lam * phi2 * phi2
        return density.flatten(1).sum(1)

    def grad_action(self, phi: torch.Tensor) -> torch.Tensor:
        """∂S/∂φ_x = Σ_μ (4 φ_x − 2 φ_{x+μ} − 2 φ_{x−μ}) + 2 m² φ_x + 4 λ φ_x³, shape ``(B, *L)``."""
        laplacian_term = 4 * self.dim * phi
        for mu in range(self.dim):
            laplacian_term = laplacian_term - 2 * (shift(phi, mu) + shift(phi, mu, -1))
        return laplacian_term + 2 * self.m2 * phi + 4 * self.lam * phi**3

    def observables(self, phi: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-configuration observables, each of shape ``(B,)``.

        ``mag2`` = M²/V, ``absmag`` = |M|/V, ``phi2`` = (1/V) Σ_x φ_x², ``action`` = S/V,
        with M = Σ_x φ_x; their ensemble means are the DESIGN.md observables.
        """
        v = self.volume
        magnetisation = phi.flatten(1).sum(1)
        return {
            "mag2": magnetisation**2 / v,
            "absmag": magnetisation.abs() / v,
            "phi2": (phi * phi).flatten(1).sum(1) / v,
            "action": self.action(phi) / v,
        }

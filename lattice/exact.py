"""Exact results of the free scalar field (λ = 0) on a periodic lattice, through its Fourier modes.

With S = Σ_x [Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x²] = ½ φᵀ A φ and A = 2(−Δ + m²), the modes
φ̃(p) = Σ_x e^{−ipx} φ_x decouple, with lattice momentum p̂² = Σ_μ 4 sin²(p_μ/2), p_μ = 2πn_μ/L_μ:

    ⟨φ̃(p) φ̃(−p)⟩ / V = G(p) = 1 / (2 (p̂² + m²))
    ⟨φ_x²⟩ = (1/V) Σ_p G(p),      ⟨M²⟩/V = G(0) = 1/(2m²)
    log Z = (V/2) log 2π − ½ Σ_p log(2 (p̂² + m²))       (Z = ∫ Π_x dφ_x e^{−S})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def lattice_momentum_squared(shape: Sequence[int]) -> np.ndarray:
    """p̂² = Σ_μ 4 sin²(π n_μ / L_μ) on the grid of momenta, shape ``(*L,)``."""
    grids = np.meshgrid(*[np.arange(extent) for extent in shape], indexing="ij")
    return sum(4 * np.sin(np.pi * n / extent) ** 2 for n, extent in zip(grids, shape, strict=True))


@dataclass(frozen=True)
class FreeField:
    """The λ = 0 theory of ``lattice.scalar.Phi4`` with m² > 0."""

    shape: tuple[int, ...]
    m2: float

    def __post_init__(self) -> None:
        if self.m2 <= 0:
            raise ValueError(f"the free field needs m2 > 0, got {self.m2}")

    @property
    def volume(self) -> int:
        return int(np.prod(self.shape))

    def propagator(self) -> np.ndarray:
        """G(p) = ⟨|φ̃(p)|²⟩/V = 1/(2(p̂² + m²)), shape ``(*L,)``."""
        return 0.5 / (lattice_momentum_squared(self.shape) + self.m2)

    def phi2(self) -> float:
        """⟨(1/V) Σ_x φ_x²⟩ = (1/V) Σ_p G(p)."""
        return float(self.propagator().mean())

    def mag2(self) -> float:
        """⟨M²⟩/V = G(0) = 1/(2m²)."""
        return 0.5 / self.m2

    def action(self) -> float:
        """⟨S⟩/V = 1/2 by equipartition (S is a quadratic form in V variables)."""
        return 0.5

    def log_z(self) -> float:
        """log Z = (V/2) log 2π − ½ Σ_p log(2(p̂² + m²))."""
        eigen = 2 * (lattice_momentum_squared(self.shape) + self.m2)
        return 0.5 * self.volume * np.log(2 * np.pi) - 0.5 * float(np.log(eigen).sum())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n exact, independent configurations ``(n, *L)``: φ̃(p) = sqrt(V G(p)) × (unit complex Gaussian
        with Hermitian symmetry), realised as the real part of the inverse FFT of white noise."""
        noise = rng.standard_normal((n, *self.shape))
        axes = tuple(range(1, len(self.shape) + 1))
        white = np.fft.fftn(noise, axes=axes)  # ⟨|ξ̃(p)|²⟩ = V, Hermitian, real-field statistics
        return np.fft.ifftn(white * np.sqrt(self.propagator()), axes=axes).real

    def covariance(self) -> np.ndarray:
        """⟨φ_x φ_y⟩ = (A⁻¹)_{xy} in real space, shape ``(V, V)`` (sites in C order); for tests."""
        g = np.fft.ifftn(self.propagator()).real  # G(x − y) = (1/V) Σ_p e^{ip(x−y)} G(p)
        coords = np.indices(self.shape).reshape(len(self.shape), -1).T
        diff = (coords[:, None, :] - coords[None, :, :]) % np.array(self.shape)
        return g[tuple(diff.transpose(2, 0, 1))]

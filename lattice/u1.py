"""Compact U(1) lattice gauge theory with the Wilson plaquette action, in D ≥ 2 dimensions.

Links U_μ(x) = e^{iθ_μ(x)} are stored as angles, a batch of configurations has shape ``(B, D, *L)``
(direction μ on axis 1, lattice direction μ on axis 2 + μ). For each plane μ < ν, in the order
(0,1), (0,2), …, (D−2, D−1), the plaquette angle is

    θ_{μν}(x) = θ_μ(x) + θ_ν(x+μ) − θ_μ(x+ν) − θ_ν(x),

and the action is S = −β Σ_x Σ_{μ<ν} cos θ_{μν}(x). Gauge transformations Ω(x) = e^{iα(x)} act as
θ_μ(x) → α(x) + θ_μ(x) − α(x+μ) and leave every θ_{μν} unchanged up to 2π. The measure is Haar,
Π dθ/2π, and periodic boundary conditions are used throughout.

In D = 2 the geometric topological charge Q = (1/2π) Σ_P arg e^{iθ_P} (see ``lattice.topology``)
is an integer; the exact finite-volume solution is in ``lattice.exact_u1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lattice.geometry import LatticeShape, shift, validate_shape
from lattice.topology import charge_2d


@dataclass(frozen=True)
class U1(LatticeShape):
    """U(1) Wilson gauge theory on a periodic lattice of extents ``shape`` (D = len(shape) ≥ 2)."""

    shape: tuple[int, ...]
    beta: float
    name: str = "u1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", validate_shape(self.shape))
        if len(self.shape) < 2:
            raise ValueError(f"a gauge theory needs D >= 2 lattice directions, got shape {self.shape}")

    @property
    def field_shape(self) -> tuple[int, ...]:
        """Shape of one configuration, ``(D, *L)``."""
        return (self.dim, *self.shape)

    @property
    def planes(self) -> tuple[tuple[int, int], ...]:
        """The D(D−1)/2 planes (μ, ν), μ < ν, in plaquette-channel order."""
        return tuple((mu, nu) for mu in range(self.dim) for nu in range(mu + 1, self.dim))

    @property
    def n_plaquettes(self) -> int:
        """Number of plaquettes V·D(D−1)/2."""
        return self.volume * len(self.planes)

    def params(self) -> dict:
        """JSON-ready description, as written to the HDF5 ``theory`` attribute and the summary."""
        return {"name": self.name, "shape": list(self.shape), "beta": self.beta}

    def plaquettes(self, x: torch.Tensor) -> torch.Tensor:
        """Plaquette angles θ_{μν}(x) of links ``x (B, D, *L)``; returns ``(B, D(D−1)/2, *L)``."""
        angles = [x[:, mu] + shift(x[:, nu], mu) - shift(x[:, mu], nu) - x[:, nu] for mu, nu in self.planes]
        return torch.stack(angles, dim=1)

    def action(self, x: torch.Tensor) -> torch.Tensor:
        """S = −β Σ_P cos θ_P for links ``x (B, D, *L)``; returns ``(B,)``."""
        return -self.beta * torch.cos(self.plaquettes(x)).flatten(1).sum(1)

    def grad_action(self, x: torch.Tensor) -> torch.Tensor:
        """∂S/∂θ_μ(x), shape ``(B, D, *L)``.

        With s_{μν}(x) = β sin θ_{μν}(x) = ∂S/∂θ_{μν}(x), each plaquette contributes
        ∂S/∂θ_μ(x) ∋ s_{μν}(x) − s_{μν}(x−ν)  and  ∂S/∂θ_ν(x) ∋ s_{μν}(x−μ) − s_{μν}(x).
        """
        sines = self.beta * torch.sin(self.plaquettes(x))
        grads = [torch.zeros_like(x[:, 0]) for _ in range(self.dim)]
        for p, (mu, nu) in enumerate(self.planes):
            s = sines[:, p]
            grads[mu] = grads[mu] + s - shift(s, nu, -1)
            grads[nu] = grads[nu] + shift(s, mu, -1) - s
        return torch.stack(grads, dim=1)

    def random_field(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` Haar-random (hot) configurations: angles uniform in [−π, π), shape ``(n, D, *L)``."""
        device = generator.device if device is None else device
        u = torch.rand((n, *self.field_shape), generator=generator, dtype=dtype, device=device)
        return (2.0 * u - 1.0) * math.pi

    def gauge_transform(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """θ_μ(x) → α(x) + θ_μ(x) − α(x+μ) for links ``x (B, D, *L)`` and angles ``alpha (B, *L)``."""
        return torch.stack([alpha + x[:, mu] - shift(alpha, mu) for mu in range(self.dim)], dim=1)

    def topological_charge(self, x: torch.Tensor) -> torch.Tensor:
        """Geometric charge Q = (1/2π) Σ_P arg e^{iθ_P} of 2D links ``x (B, 2, L0, L1)``; returns ``(B,)``."""
        if self.dim != 2:
            raise ValueError(f"the geometric U(1) charge is implemented for D = 2, not D = {self.dim}")
        return charge_2d(self.plaquettes(x)[:, 0])

    def exact_charge_distribution(self) -> dict[int, float] | None:
        """{Q: P(Q)} of the topological charge on a 2D torus, from the character expansion
        (``lattice.exact_u1.charge_distribution``); None in other dimensions."""
        if self.dim != 2:
            return None
        from lattice.exact_u1 import charge_distribution  # scipy, only when a report asks

        charges, probabilities = charge_distribution(float(self.beta), tuple(self.shape))
        return {int(q): float(p) for q, p in zip(charges, probabilities, strict=True)}

    def observables(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-configuration observables of links ``x (B, D, *L)``, each of shape ``(B,)``.

        ``plaquette`` = (1/N_P) Σ_P cos θ_P, and in D = 2 also ``Q``, ``Q2`` = Q² and
        ``chi_t`` = Q²/V, so that their ensemble means are the DESIGN.md observables.
        """
        plaq = self.plaquettes(x)
        out = {"plaquette": torch.cos(plaq).flatten(1).mean(1)}
        if self.dim == 2:
            q = charge_2d(plaq[:, 0])
            out.update(Q=q, Q2=q * q, chi_t=q * q / self.volume)
        return out

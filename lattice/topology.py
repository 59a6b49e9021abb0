"""Angles on the circle and the geometric topological charge of 2D U(1) gauge fields.

For a plaquette angle θ_P the principal value arg e^{iθ_P} lies in (−π, π]. On a two-dimensional
periodic lattice the geometric charge

    Q = (1/2π) Σ_P arg e^{iθ_P}

is an integer: Σ_P θ_P = 0 exactly (every link enters two plaquettes with opposite signs), and each
principal value differs from θ_P by a multiple of 2π.
"""

from __future__ import annotations

import math

import torch

TWO_PI = 2.0 * math.pi


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Principal value arg e^{iθ} ∈ (−π, π], elementwise, any shape.

    Computed as π − ((π − θ) mod 2π), which maps θ = ±π to +π.
    """
    return math.pi - torch.remainder(math.pi - theta, TWO_PI)


def charge_2d(plaquette_angles: torch.Tensor) -> torch.Tensor:
    """Geometric charge Q = (1/2π) Σ_P arg e^{iθ_P} of 2D plaquette angles ``(B, *L)``; returns ``(B,)``."""
    return wrap_angle(plaquette_angles).flatten(1).sum(1) / TWO_PI

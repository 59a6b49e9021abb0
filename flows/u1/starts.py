"""Physics-informed start of 2D U(1) flows: a fixed map that turns a Haar-uniform plaquette angle into one
distributed (almost exactly) as the single-plaquette Wilson weight.

In 2D the Wilson weight factorises over plaquettes up to finite-volume constraints, so each plaquette
angle is nearly distributed as p_β(θ) = e^{β cos θ} / (2π I_0(β)). A coupling whose active plaquettes are
Haar-uniform and whose passive plaquettes are not yet shaped (``flows.u1.sweep``) turns them into
p_β when it applies the quantile map

    h(u) = F^{-1}(u / 2π),   F(θ) = θ/2π + (1/π) Σ_{n≥1} (I_n(β)/I_0(β)) sin(nθ)/n,   θ ∈ [0, 2π),

with slope h'(u) = 1 / (2π p_β(h(u))). A circular spline with a few bins cannot follow it at strong
coupling (at β = 6 the slope varies by e^{12}; an 8- or 16-bin spline through equal-probability knots,
with capped knot slopes, leaves a KL divergence per plaquette that adds up over the lattice).
:func:`wilson_table` instead tabulates the CDF of

    p̃(θ) = (1 − ε) p_β(θ) + ε / 2π

on a uniform grid of K θ-knots, and ``flows.circular.table_forward`` interpolates it linearly: an exact
circle diffeomorphism (piecewise linear, log-slope constant per bin) whose output density is p̃ averaged
over each bin. Per plaquette, KL(q‖p_β) ≈ ε + O((β Δθ)²) ≈ 1e-4 at K = 1024, β = 6. The floor ε keeps every
bin at least ε Δθ wide in u, so the table is resolvable in float32 as well, and gives the proposal
heavier tails than p_β, the safe side for an importance proposal. The table is fixed (not trained); the
coupling's trainable spline acts after it, starting at the identity. Exactness does not depend on it.

On a torus the plaquettes are not independent: Π_x U_P(x) = 1. When a coupling shapes one plaquette of a
region R of n not yet shaped plaquettes (its passive one among them) whose Wilson loop Σ = Σ_{P∈R} θ_P the
layer leaves unchanged (``flows.u1.sweep``), the exact density of the active angle given Σ is

    c(θ | Σ) ∝ p_β(θ) g_{n−1}(Σ − θ),    g_m(φ) = (1/2π) [1 + 2 Σ_{k≥1} (I_k(β)/I_0(β))^m cos kφ],

g_m being the m-fold circular convolution of p_β. :func:`conditional_table` tabulates its quantile map for
each configuration's Σ, in the same piecewise-linear form (with the floor ε).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ive

TWO_PI = 2.0 * math.pi
TABLE_KNOTS = 1024
TABLE_FLOOR = 1e-4


def wilson_cdf(theta: np.ndarray, beta: float, n_terms: int = 200) -> np.ndarray:
    """F(θ) of p_β on [0, 2π) (module docstring); ``theta`` any shape, float64."""
    n = np.arange(1, n_terms + 1)
    ratio = ive(n, beta) / ive(0, beta)  # I_n/I_0, scaled Bessel functions avoid overflow
    series = np.sin(np.multiply.outer(theta, n)) @ (ratio / n)
    return theta / TWO_PI + series / math.pi


def wilson_table(beta: float, knots: int = TABLE_KNOTS, floor: float = TABLE_FLOOR
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Knots ``(u_k, θ_k)``, each ``(K + 1,)`` float64 and increasing from 0 to 2π, of the piecewise-linear
    quantile map u ↦ θ of p̃ = (1 − ε) p_β + ε/2π (module docstring): θ_k = 2πk/K, u_k = 2π F̃(θ_k)."""
    if knots < 2 or not 0.0 < floor < 1.0:
        raise ValueError(f"wilson_table needs knots >= 2 and 0 < floor < 1, got {knots}, {floor}")
    theta = np.linspace(0.0, TWO_PI, knots + 1)
    cdf = (1.0 - floor) * np.maximum.accumulate(wilson_cdf(theta, beta)) + floor * theta / TWO_PI
    cdf[0], cdf[-1] = 0.0, 1.0
    return torch.from_numpy(TWO_PI * cdf), torch.from_numpy(theta)


def bessel_ratios(beta: float, n_terms: int = 400) -> np.ndarray:
    """r_k = I_k(β)/I_0(β) for k = 1..``n_terms`` (float64)."""
    return ive(np.arange(1, n_terms + 1), beta) / ive(0, beta)


@dataclass(frozen=True)
class ConditionalTable:
    """What :func:`conditional_table` needs besides the loops, computed once per coupling: θ-knots
    ``(K + 1,)``, the bin midpoints' log p_β ``(K,)`` (up to a constant), the kept Fourier orders k
    ``(k_max,)`` with coefficients c_k = (I_k/I_0)^{n_rest} ``(k_max,)``, cos kθ and sin kθ at the
    midpoints ``(k_max, K)``, and the floor ε. All float64."""

    theta: torch.Tensor
    log_weight: torch.Tensor
    orders: torch.Tensor
    coefficients: torch.Tensor
    cos_theta: torch.Tensor
    sin_theta: torch.Tensor
    floor: float

    @classmethod
    def build(cls, beta: float, n_rest: int, knots: int = TABLE_KNOTS, floor: float = TABLE_FLOOR
              ) -> ConditionalTable:
        """The table for ``n_rest`` ≥ 1 other not yet shaped plaquettes in the region, at ``beta``."""
        if n_rest < 1:
            raise ValueError(f"conditional_table needs n_rest >= 1, got {n_rest}")
        ratios = bessel_ratios(beta) ** n_rest
        coefficients = torch.from_numpy(ratios[ratios > 1e-17])
        theta = torch.linspace(0.0, TWO_PI, knots + 1, dtype=torch.float64)
        middle = 0.5 * (theta[1:] + theta[:-1])
        orders = torch.arange(1, coefficients.numel() + 1, dtype=torch.float64)
        k_theta = orders[:, None] * middle
        return cls(theta, beta * torch.cos(middle), orders, coefficients, torch.cos(k_theta),
                   torch.sin(k_theta), floor)

    def to(self, device: torch.device | str) -> ConditionalTable:
        """The same table on ``device``."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return ConditionalTable(**moved)


def conditional_table(loop: torch.Tensor, table: ConditionalTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Knots ``(u (B, K + 1), θ (K + 1,))``, float64, of the piecewise-linear quantile map of
    (1 − ε) c(θ | Σ) + ε/2π (module docstring) for each Wilson loop angle Σ in ``loop (B,)``; ``table``
    (:class:`ConditionalTable`) fixes β and the number of other plaquettes. θ_k = 2πk/K; the mass of bin
    k is c at its midpoint (normalised), so u_k = 2π × the cumulative mass."""
    loop = loop.to(torch.float64)
    knots = table.log_weight.numel()
    # g(Σ − θ) = 1 + 2 Σ_k c_k [cos kΣ cos kθ + sin kΣ sin kθ]: two (B, k) @ (k, K) products
    k_loop = loop[:, None] * table.orders
    rest = 1.0 + 2.0 * ((torch.cos(k_loop) * table.coefficients) @ table.cos_theta
                        + (torch.sin(k_loop) * table.coefficients) @ table.sin_theta)
    log_density = table.log_weight + torch.log(rest.clamp(min=1e-300))
    mass = (1.0 - table.floor) * torch.softmax(log_density, dim=1) + table.floor / knots
    cdf = torch.cumsum(mass, dim=1)
    u = TWO_PI * torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, :-1], torch.ones_like(cdf[:, :1])], dim=1)
    return u, table.theta

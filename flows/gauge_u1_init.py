"""Physics-informed initial weights for 2D U(1) flows: start the plaquette maps at the single-plaquette
Wilson distribution instead of the identity.

In 2D the Wilson weight factorises over plaquettes up to finite-volume constraints, so each plaquette
angle is nearly distributed as p_β(θ) = e^{β cos θ} / (2π I_0(β)). A coupling whose active plaquettes
are Haar-uniform and whose passive plaquettes are not yet shaped (the first cycle of decreasing
offsets, ``flows.gauge_u1``) turns them into p_β exactly when its circle map is the quantile map

    h(u) = F^{-1}(u / 2π),   F(θ) = θ/2π + (1/π) Σ_{n≥1} (I_n(β)/I_0(β)) sin(nθ)/n,   θ ∈ [0, 2π),

whose slope is h'(u) = 1 / (2π p_β(h(u))). :func:`wilson_spline_params` returns the raw parameters of a
K-bin circular rational-quadratic spline (``flows.circular``) interpolating h: equal input bins, output
knots at the quantiles F^{-1}(k/K), knot slopes h'(u_k) (capped at ``max_slope``, which gives the
flow heavier tails than p_β, the safe side for an importance proposal). Setting them as the bias of a
conditioner's zero-weight last convolution makes the layer apply h at every site from the first step;
training then only has to learn the corrections. Exactness does not depend on the initial weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ive

from flows.circular import MIN_BIN, MIN_SLOPE

TWO_PI = 2.0 * math.pi


def wilson_cdf(theta: np.ndarray, beta: float, n_terms: int = 200) -> np.ndarray:
    """F(θ) of p_β on [0, 2π) (module docstring); ``theta`` any shape, float64."""
    n = np.arange(1, n_terms + 1)
    ratio = ive(n, beta) / ive(0, beta)  # I_n/I_0, scaled Bessel functions avoid overflow
    series = np.sin(np.multiply.outer(theta, n)) @ (ratio / n)
    return theta / TWO_PI + series / math.pi


def wilson_quantiles(beta: float, probabilities: np.ndarray, grid: int = 200_001) -> np.ndarray:
    """F^{-1}(p) by monotone interpolation on a fine grid of [0, 2π]."""
    theta = np.linspace(0.0, TWO_PI, grid)
    cdf = np.maximum.accumulate(wilson_cdf(theta, beta))
    cdf[0], cdf[-1] = 0.0, 1.0
    return np.interp(probabilities, cdf, theta)


def wilson_spline_params(beta: float, bins: int, max_slope: float = 50.0) -> torch.Tensor:
    """Raw circular-spline parameters ``(3K,)`` (float64) approximating the quantile map of p_β."""
    knots = wilson_quantiles(beta, np.arange(bins + 1) / bins)
    heights = np.diff(knots)
    fractions = (heights / TWO_PI - MIN_BIN) / (1.0 - bins * MIN_BIN)
    if np.any(fractions <= 0):
        raise ValueError(f"β = {beta}: {bins} bins are too few for the Wilson quantile map (a bin would be "
                         f"narrower than the spline's minimum); use fewer bins or a smaller β")
    density = np.exp(beta * (np.cos(knots[:-1]) - 1.0)) / (TWO_PI * ive(0, beta))
    slopes = np.clip(1.0 / (TWO_PI * density), MIN_SLOPE + 1e-6, max_slope)
    offset = math.log(math.expm1(1.0 - MIN_SLOPE))
    excess = slopes - MIN_SLOPE  # softplus⁻¹(y) = log(e^y − 1), = y to double precision above 40
    raw_slopes = np.where(excess > 40.0, excess, np.log(np.expm1(np.minimum(excess, 40.0)))) - offset
    params = np.concatenate([np.zeros(bins), np.log(fractions), raw_slopes])
    return torch.from_numpy(params)

r"""The Pareto k̂ diagnostic of importance weights (Pareto-smoothed importance sampling).

Reference: A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry, "Pareto smoothed importance sampling",
JMLR 25 (2024) 1 (arXiv:1507.02646). The largest M of the N importance ratios w_i = p̃(x_i)/q(x_i),

    M = ⌈min(0.2 N, 3 √N)⌉,

are fitted with a generalized Pareto distribution (GPD) above the threshold u = the (M+1)-th largest
ratio, GPD(x − u; σ, k) with density (1/σ)(1 + k (x − u)/σ)^{−1/k − 1}. Its shape k̂ tells how heavy
the tail of the weights is: the weights have 1/k̂ finite moments, so

    k̂ < 0.5   the variance of the weights is finite: self-normalised estimates converge at N^{−1/2}
    0.5–0.7  finite mean, infinite variance: estimates converge, slowly, and their errors are unreliable
    k̂ > 0.7   the estimates (and Metropolis chains on the same proposal) cannot be trusted.

The GPD fit is the empirical-Bayes estimate of J. Zhang and M. A. Stephens, Technometrics 51 (2009)
316, with θ = −k/σ and the sorted exceedances x_(1) ≤ … ≤ x_(M) (x = w − u):

    m = 30 + ⌊√M⌋,   θ_j = 1/x_(M) + [1 − √(m/(j − ½))] / (3 x_(⌊M/4 + ½⌋)),   j = 1 … m
    k(θ) = (1/M) Σ_i log(1 − θ x_i)           (the profile maximum of the shape; k = −(ZS's k))
    ℓ(θ) = M [log(−θ/k(θ)) − k(θ) − 1]        (the profile log-likelihood)
    θ̂ = Σ_j θ_j π_j,  π_j = 1/Σ_l exp(ℓ(θ_l) − ℓ(θ_j)),   k̂ = k(θ̂),  σ̂ = −k̂/θ̂

followed, as in Vehtari et al., by the weakly informative shrinkage k̂ → (M k̂ + 10 · 0.5)/(M + 10).
The weights are rescaled by exp(−max log w) first; k̂ does not depend on that scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

K_SLOW = 0.5  # above: infinite variance, slow and unreliable convergence
K_BAD = 0.7  # above: estimates unreliable
MIN_TAIL = 5  # fewer tail samples than this give no k̂


@dataclass(frozen=True)
class ParetoK:
    """Pareto shape ``k`` of the upper weight tail (NaN when there are too few distinct weights),
    its scale ``sigma`` (in units of the largest weight), ``n_tail`` = M and ``n`` = N."""

    k: float
    sigma: float
    n_tail: int
    n: int

    def warning(self) -> str | None:
        """One line for k̂ > 0.7 or k̂ > 0.5, else None."""
        if self.k > K_BAD:
            return (f"Pareto k̂ = {self.k:.2f} > {K_BAD}: the importance weights have an infinite-variance "
                    "tail; reweighted estimates and flow-chain errors are unreliable")
        if self.k > K_SLOW:
            return (f"Pareto k̂ = {self.k:.2f} > {K_SLOW}: heavy weight tail; estimates converge slowly "
                    "and their errors may be underestimated")
        return None


def tail_length(n: int) -> int:
    """M = ⌈min(0.2 N, 3 √N)⌉ (Vehtari et al., with relative efficiency 1)."""
    return int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))


def gpd_fit(x: ArrayLike) -> tuple[float, float]:
    """Zhang–Stephens empirical-Bayes fit of a GPD to exceedances ``x (M,)`` ≥ 0 (module docstring).

    Returns ``(k, sigma)`` before the weakly informative shrinkage; ``(inf, nan)`` when the exceedances
    underflow (a tail spanning more than e^700, as an untrained flow on a large lattice gives).
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = x.size
    quartile = x[int(n / 4 + 0.5) - 1]
    if not quartile > 0.0:  # the tail spans more than e^700: it underflowed, an unboundedly heavy tail
        return math.inf, math.nan
    m = 30 + int(math.sqrt(n))
    j = np.arange(1, m + 1, dtype=np.float64)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile)
    k = np.log1p(-theta[:, None] * x).mean(axis=1)
    loglik = n * (np.log(-theta / k) - k - 1.0)
    with np.errstate(over="ignore"):  # a far smaller ℓ(θ_j) gives weight 0
        weights = 1.0 / np.exp(loglik[None, :] - loglik[:, None]).sum(axis=1)
    keep = weights >= 10 * np.finfo(np.float64).eps
    weights = weights[keep] / weights[keep].sum()
    theta_hat = float(np.sum(theta[keep] * weights))
    k_hat = float(np.log1p(-theta_hat * x).mean())
    if theta_hat == 0.0 or not math.isfinite(k_hat):
        return math.inf, math.nan
    return k_hat, -k_hat / theta_hat


def pareto_k(logw: ArrayLike) -> ParetoK:
    """k̂ of the upper tail of the weights e^{logw}, ``logw (N,)`` of any normalisation (module
    docstring). Non-finite log weights are dropped; k̂ is NaN when fewer than ``MIN_TAIL`` tail weights
    exceed the threshold (e.g. N < 25, or all weights equal)."""
    lw = np.asarray(logw, dtype=np.float64).reshape(-1)
    lw = np.sort(lw[np.isfinite(lw)])
    n = lw.size
    m = tail_length(n) if n else 0
    if m < MIN_TAIL or n <= m:
        return ParetoK(math.nan, math.nan, m, n)
    top = lw[-1]
    cutoff = lw[-m - 1]
    tail = lw[lw > cutoff]
    x = np.exp(tail - top) - math.exp(cutoff - top)
    if tail.size < MIN_TAIL or not np.any(x > 0):
        return ParetoK(math.nan, math.nan, int(tail.size), n)
    k, sigma = gpd_fit(x)
    k = (tail.size * k + 10 * 0.5) / (tail.size + 10)
    return ParetoK(float(k), float(sigma), int(tail.size), n)

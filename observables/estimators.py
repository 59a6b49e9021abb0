r"""Blocked jackknife, reweighting effective sample size and self-normalised reweighted means.

Reweighting. A proposal density q (for example a normalizing flow) gives samples x_i ~ q and log
weights ``logw_i = log p̃(x_i) − log q(x_i)``, with p̃ = e^{−S} unnormalised; any additive constant in
logw cancels below. The self-normalised estimate of ⟨O⟩_p and the effective sample size per sample are

    ⟨O⟩ ≈ Σ_i w_i O_i / Σ_i w_i,        ESS = (Σ_i w_i)² / (N Σ_i w_i²)  ∈ [1/N, 1]

(Kish's effective sample size, as used by Albergo et al., PRD 100 (2019) 034515). ESS is evaluated in
log space, ln ESS = 2 LSE(logw) − LSE(2 logw) − ln N with LSE the log-sum-exp, so that logw of order
10³ neither overflows nor underflows.

Jackknife. The N measurements are cut into n_bins consecutive blocks of b = ⌊N/n_bins⌋ (the last
N mod n_bins are dropped); θ_k = f(mean without block k) and

    σ²_JK = (n−1)/n Σ_k (θ_k − θ̄)²,     bias ≈ (n−1)(θ̄ − f(mean)),     θ̄ = (1/n) Σ_k θ_k

(e.g. B. Efron, The Jackknife, the Bootstrap and Other Resampling Plans, SIAM 1982). Blocks much longer
than τ_int make the error valid for autocorrelated data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp


@dataclass(frozen=True, eq=False)
class JackknifeResult:
    """Blocked-jackknife estimate. ``mean`` = f(mean of all used data); ``err`` = σ_JK; ``bias`` =
    (n−1)(θ̄ − mean), so ``mean − bias`` is the bias-corrected value; ``samples``: θ_k, shape
    ``(n_bins, *out_shape)``; ``mean``/``err``/``bias`` are floats for scalar f, else arrays ``out_shape``.
    """

    mean: float | np.ndarray
    err: float | np.ndarray
    bias: float | np.ndarray
    n_bins: int
    block_size: int
    samples: np.ndarray


@dataclass(frozen=True)
class ReweightedResult:
    """Self-normalised reweighted mean Σ w O / Σ w with its blocked-jackknife error and the ESS."""

    mean: float
    err: float
    ess: float
    n: int


def _scalar_or_array(a: np.ndarray) -> float | np.ndarray:
    """A 0-d array as a float, any other as a read-only array."""
    if a.ndim == 0:
        return float(a)
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def jackknife(f: Callable[[np.ndarray], ArrayLike], data: ArrayLike, n_bins: int = 20) -> JackknifeResult:
    """Blocked jackknife of θ = f(⟨a⟩) (formulas in the module docstring).

    ``data``: shape ``(N, *k)`` with Monte Carlo time along axis 0; ``f`` maps a mean of shape ``k``
    to a scalar or an array. ``n_bins``: number of blocks, 2 ≤ n_bins ≤ N.
    """
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 0 or not 2 <= n_bins <= arr.shape[0]:
        raise ValueError(f"need 2 <= n_bins <= N, got n_bins={n_bins} for data of shape {arr.shape}")
    b = arr.shape[0] // n_bins
    blocks = arr[: b * n_bins].reshape(n_bins, b, *arr.shape[1:]).sum(axis=1)  # (n, *k)
    total = blocks.sum(axis=0)
    full = np.asarray(f(total / (b * n_bins)), dtype=np.float64)
    theta = np.stack([np.asarray(f((total - blk) / (b * (n_bins - 1))), dtype=np.float64) for blk in blocks])
    theta_bar = theta.mean(axis=0)
    err = np.sqrt((n_bins - 1) / n_bins * ((theta - theta_bar) ** 2).sum(axis=0))
    bias = (n_bins - 1) * (theta_bar - full)
    theta.setflags(write=False)
    return JackknifeResult(
        _scalar_or_array(full), _scalar_or_array(err), _scalar_or_array(bias), n_bins, b, theta
    )


def _check_logw(logw: ArrayLike) -> np.ndarray:
    """Validate log weights: 1-D, non-empty, no NaN or +inf, not all −inf. Returns float64 ``(N,)``."""
    lw = np.asarray(logw, dtype=np.float64).reshape(-1)
    if lw.size == 0 or np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log weights must be non-empty and free of NaN and +inf")
    if np.all(lw == -np.inf):
        raise ValueError("all weights are zero")
    return lw


def ess(logw: ArrayLike) -> float:
    """Reweighting effective sample size per sample, (Σw)² / (N Σw²), from log weights ``(N,)``.

    Computed as exp(2 LSE(logw) − LSE(2 logw) − ln N): invariant under logw → logw + c, and stable for
    any magnitude of logw. Equals 1 for equal weights and 1/N when one weight dominates.
    """
    lw = _check_logw(logw)
    return float(math.exp(2.0 * logsumexp(lw) - logsumexp(2.0 * lw) - math.log(lw.size)))


def reweighted_mean(values: ArrayLike, logw: ArrayLike, n_bins: int = 20) -> ReweightedResult:
    """Self-normalised reweighted mean Σ w_i O_i / Σ w_i with a blocked-jackknife error.

    ``values``: O_i, shape ``(N,)``; ``logw``: log p̃ − log q, shape ``(N,)``, any normalisation.
    The mean uses all N samples, the error the first n_bins·⌊N/n_bins⌋. The weights are rescaled by
    exp(−max logw) before exponentiating; the jackknife treats the ratio of the two means ⟨wO⟩/⟨w⟩ as
    a derived quantity, so the correlation of numerator and denominator is included. ``n_bins`` is
    capped at N.
    """
    lw = _check_logw(logw)
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    if vals.shape != lw.shape:
        raise ValueError(f"values {vals.shape} and logw {lw.shape} must have the same length")
    w = np.exp(lw - lw.max())
    pairs = np.stack([w * vals, w], axis=1)  # (N, 2)
    res = jackknife(lambda m: m[0] / m[1], pairs, n_bins=min(n_bins, len(vals)))
    return ReweightedResult(float(np.dot(w, vals) / w.sum()), float(res.err), ess(lw), len(vals))

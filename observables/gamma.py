r"""Wolff's Gamma method: autocorrelation-aware errors of Monte Carlo averages.

Reference: U. Wolff, "Monte Carlo errors with less errors", Comput. Phys. Commun. 156 (2004) 143,
hep-lat/0306017. Equation numbers below refer to that paper.

Notation. One observable is measured on R replicas (independent Markov chains); replica r holds
``N_r`` consecutive measurements ``a_i^r`` and ``N = Σ_r N_r``.

- Mean over all data (eq. 30)::

      ā = (1/N) Σ_r Σ_i a_i^r ,            δ_i^r = a_i^r − ā

- Autocorrelation function, summed over replicas (eq. 31), with the number of pairs at lag t
  (``N − R t`` when all replicas are longer than t)::

      Γ(t) = Σ_r Σ_{i=1}^{N_r−t} δ_i^r δ_{i+t}^r  /  Σ_r max(N_r − t, 0)

  computed by FFT with zero padding (no wrap-around), in O(N log N).
- Normalised autocorrelation ρ(t) = Γ(t)/Γ(0) and the windowed integrated autocorrelation time::

      τ_int(W) = 1/2 + Σ_{t=1}^{W} ρ(t),    C_F(W) = Γ(0) + 2 Σ_{t=1}^{W} Γ(t) = 2 Γ(0) τ_int(W)

- Automatic window (eq. 51–52), with S ≈ 1–2 (default 1.5)::

      τ(W) = S / ln[(2 τ_int(W) + 1) / (2 τ_int(W) − 1)]      (τ → 0⁺ when τ_int(W) ≤ 1/2)
      g(W) = exp(−W/τ(W)) − τ(W)/sqrt(W N)

  W is the first W ≥ 1 with g(W) < 0 (the last computed lag if there is none). S = 0 means W = 0:
  no autocorrelation is assumed and the error is the naive standard error.
- Bias correction (eq. 49): C_F(W) → C_F(W) (1 + (2W+1)/N); the variance is corrected as the
  W = 0 case of the same formula, v_F = Γ(0) (1 + 1/N), so that::

      τ_int = τ_int(W) (1 + (2W+1)/N) / (1 + 1/N),     σ(ā) = sqrt(C_F / N) = sqrt(2 τ_int v_F / N)

- τ_int(W) at the chosen W is floored at 1/2 before the correction (as pyerrors does), so that an
  accidentally negative ρ(1) of uncorrelated data never shrinks the error below the naive one;
  genuinely anticorrelated series are thereby treated conservatively.
- Error of τ_int (eq. 42), evaluated with the uncorrected (floored) τ_int(W)::

      σ²(τ_int) ≈ (4/N) (W + 1/2 − τ_int) τ_int²

- Error of ρ(t) (Madras–Sokal, Wolff appendix E), summed up to k = t + W with ρ(k) = 0 beyond the
  computed range::

      σ²(ρ(t)) ≈ (1/N) Σ_{k=1}^{t+W} [ρ(k+t) + ρ(|k−t|) − 2 ρ(k) ρ(t)]²

- Derived quantities F = f(ā_1, …, ā_m) (sec. 3.2): the fluctuations are projected on the gradient,
  a_F,i^r = Σ_α f_α a_α,i^r with f_α = ∂f/∂ā_α, and the projected series is analysed as above; the
  central value is f(ā).

Conventions shared with pyerrors (``Obs.gamma_method`` with its defaults ``tau_exp=0``, ``fft=True``):
the largest lag is ``max_r N_r // 2 − 1``, the bias correction and σ(τ_int) are the formulas above.
One difference: pyerrors subtracts each replica's own mean (δ = a − ā^r), Wolff's eq. 31 the global
mean; ``replica_means=True`` selects the pyerrors convention. With one replica the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft
from numpy.typing import ArrayLike

_FFT_BLOCK = 1 << 22  # elements per FFT batch, to bound memory for many chains


def format_value(mean: float, err: float, digits: int = 2) -> str:
    """Compact value-with-error notation: ``format_value(0.74123, 0.00312) == "0.7412(31)"``.

    The error is rounded to ``digits`` significant figures and printed in units of the last digit of
    the mean; errors ≥ 10^digits print as integers (``12345(456)``). Zero or non-finite errors give the
    mean in ``%.6g``, followed by ``(0)`` or ``(nan)``.
    """
    if not math.isfinite(mean):
        return f"{mean}"
    if not math.isfinite(err) or err <= 0:
        return f"{mean:.6g}({0 if err == 0 else err})"
    decimals = max(digits - 1 - math.floor(math.log10(err)), 0)
    unit = round(err * 10**decimals)
    if unit >= 10**digits and decimals > 0:  # rounding carried into an extra digit, e.g. 0.0996 → 0.10
        decimals -= 1
        unit = round(err * 10**decimals)
    return f"{mean:.{decimals}f}({unit})"


@dataclass(frozen=True, eq=False)
class GammaResult:
    """Gamma-method analysis of one (primary or derived) observable.

    ``mean``, ``err``: estimate and its error σ = sqrt(C_F/N); ``tau_int``, ``tau_int_err``: integrated
    autocorrelation time (bias corrected) and its error; ``window``: the chosen W; ``S``: the windowing
    parameter; ``n``: the total number of measurements N; ``n_replicas``: R; ``variance``: Γ(0).
    Arrays of shape ``(t_out + 1,)``, indexed by the lag t = W = 0..t_out (t_out = min(t_max, max(4W, 20))):
    ``rho`` = ρ(t), ``rho_err`` = σ(ρ(t)), ``tau_int_of_w`` = τ_int(W) before bias correction.
    """

    mean: float
    err: float
    tau_int: float
    tau_int_err: float
    window: int
    S: float
    n: int
    n_replicas: int
    variance: float
    rho: np.ndarray
    rho_err: np.ndarray
    tau_int_of_w: np.ndarray

    def __str__(self) -> str:
        """Compact value with error, e.g. ``0.0441(12)`` (``format_value``)."""
        return format_value(self.mean, self.err)

    @property
    def n_eff(self) -> float:
        """Effective number of independent measurements, N / (2 τ_int)."""
        return self.n / (2.0 * self.tau_int) if self.tau_int > 0 else float("inf")


def as_replicas(data: ArrayLike | Sequence[ArrayLike]) -> list[np.ndarray]:
    """Normalise one observable's data to a list of float64 replicas, each of shape ``(N_r,)``.

    Accepted: a list/tuple of 1-D arrays (replicas, lengths may differ); a 2-D array ``(N, R)`` of R
    equal-length replicas (the HDF5 ``obs/<name>`` layout of B chains); a 1-D array (one replica).
    Torch tensors are moved to the CPU. Raises ``ValueError`` on empty or non-finite data.
    """
    if isinstance(data, (list, tuple)) and len(data) > 0 and np.ndim(_to_numpy(data[0])) >= 1:
        reps = [np.asarray(_to_numpy(r), dtype=np.float64) for r in data]
        if any(r.ndim != 1 for r in reps):
            raise ValueError("each replica must be a 1-D array")
    else:
        arr = np.asarray(_to_numpy(data), dtype=np.float64)
        if arr.ndim == 1:
            reps = [arr]
        elif arr.ndim == 2:
            reps = [np.ascontiguousarray(arr[:, r]) for r in range(arr.shape[1])]
        else:
            raise ValueError(f"expected 1-D, (N, R) or a list of 1-D replicas, got shape {arr.shape}")
    reps = [r for r in reps if r.size > 0]
    if not reps:
        raise ValueError("no data")
    if not all(np.all(np.isfinite(r)) for r in reps):
        raise ValueError("data contain NaN or inf")
    return reps


def _to_numpy(x: object) -> object:
    """Detach a torch tensor to a CPU numpy array; pass anything else through."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


def autocovariance(deltas: Sequence[np.ndarray], t_max: int) -> np.ndarray:
    """Replica-summed autocovariance Γ(t), t = 0..t_max, of fluctuations δ_i^r (Wolff eq. 31).

    ``deltas``: R arrays of shape ``(N_r,)``. Returns shape ``(t_max + 1,)``; a lag with no pair gives 0.
    Replicas of equal length are transformed together; padding to ≥ N_r + t_max avoids wrap-around.
    """
    numer = np.zeros(t_max + 1)
    by_length: dict[int, list[np.ndarray]] = {}
    for d in deltas:
        by_length.setdefault(len(d), []).append(d)
    for n_r, group in by_length.items():
        nfft = scipy.fft.next_fast_len(n_r + t_max + 1, real=True)
        m = min(t_max + 1, n_r)
        step = max(1, _FFT_BLOCK // nfft)
        for start in range(0, len(group), step):
            block = np.stack(group[start : start + step], axis=1)  # (N_r, k)
            spec = scipy.fft.rfft(block, n=nfft, axis=0)
            acf = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=nfft, axis=0)
            numer[:m] += acf[:m].sum(axis=1)
    lengths = np.array([len(d) for d in deltas])
    pairs = np.clip(lengths[None, :] - np.arange(t_max + 1)[:, None], 0, None).sum(axis=1)
    return np.where(pairs > 0, numer / np.maximum(pairs, 1), 0.0)


def tau_int_curve(rho: np.ndarray) -> np.ndarray:
    """τ_int(W) = 1/2 + Σ_{t=1}^{W} ρ(t) for W = 0..len(rho)−1, given ρ of shape ``(T,)`` with ρ(0) = 1."""
    return np.cumsum(rho) - 0.5


def auto_window(tau_int_of_w: np.ndarray, n: int, S: float) -> int:
    """Wolff's automatic window (eq. 52): the first W ≥ 1 with g(W) < 0, else the largest W.

    ``tau_int_of_w``: τ_int(W), shape ``(T,)``; ``n``: total N. With τ_int(W) ≤ 1/2, τ(W) → 0⁺ and
    g(W) < 0, so the window closes there. ``S = 0`` returns W = 0.
    """
    if S == 0 or len(tau_int_of_w) < 2:
        return 0
    w = np.arange(1, len(tau_int_of_w))
    tw = tau_int_of_w[1:]
    g = np.full(len(w), -1.0)
    ok = tw > 0.5
    tau = S / np.log((2.0 * tw[ok] + 1.0) / (2.0 * tw[ok] - 1.0))
    g[ok] = np.exp(-w[ok] / tau) - tau / np.sqrt(w[ok] * n)
    below = np.flatnonzero(g < 0)
    return int(w[below[0]]) if below.size else int(w[-1])


def rho_errors(rho: np.ndarray, window: int, n: int, t_out: int) -> np.ndarray:
    """σ(ρ(t)) for t = 0..t_out by the Madras–Sokal formula (Wolff appendix E), shape ``(t_out + 1,)``.

    σ²(ρ(t)) ≈ (1/N) Σ_{k=1}^{t+W} [ρ(k+t) + ρ(|k−t|) − 2ρ(k)ρ(t)]², with ρ = 0 past its computed range.
    """
    ext = np.concatenate([rho, np.zeros(2 * t_out + window + 2)])
    out = np.zeros(t_out + 1)
    for t in range(1, t_out + 1):
        k = np.arange(1, t + window + 1)
        terms = ext[k + t] + ext[np.abs(k - t)] - 2.0 * ext[k] * ext[t]
        out[t] = math.sqrt(float(np.dot(terms, terms)) / n)
    return out


def _freeze(a: np.ndarray) -> np.ndarray:
    """Return ``a`` as a read-only float64 array (results are immutable records)."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _constant_result(mean: float, n: int, n_rep: int, S: float) -> GammaResult:
    """Result for a series with zero variance: error 0, τ_int = 1/2, W = 0."""
    one = _freeze(np.ones(1))
    return GammaResult(mean, 0.0, 0.5, 0.0, 0, S, n, n_rep, 0.0, one, _freeze(np.zeros(1)), _freeze([0.5]))


def _analyze(reps: list[np.ndarray], S: float, replica_means: bool) -> GammaResult:
    """Gamma-method analysis of replicas ``reps`` (each ``(N_r,)``); see the module docstring."""
    if not (math.isfinite(S) and S >= 0):
        raise ValueError(f"S must be a finite number >= 0, got {S}")
    n = int(sum(len(r) for r in reps))
    if n < 2:
        raise ValueError("the Gamma method needs at least 2 measurements")
    mean = float(sum(float(r.sum()) for r in reps) / n)
    deltas = [r - (r.mean() if replica_means else mean) for r in reps]
    scale = max(abs(mean), max(float(np.abs(r).max()) for r in reps), np.finfo(float).tiny)
    t_max = max(max(len(r) for r in reps) // 2 - 1, 0)
    gamma = autocovariance(deltas, t_max)
    if gamma[0] <= (64.0 * np.finfo(float).eps * scale) ** 2:
        return _constant_result(mean, n, len(reps), S)
    rho = gamma / gamma[0]
    tau_w = tau_int_curve(rho)
    w = auto_window(tau_w, n, S)
    tau_raw = max(float(tau_w[w]), 0.5)  # floor at 1/2, as pyerrors: never below the naive error
    c_f = max(2.0 * gamma[0] * tau_raw * (1.0 + (2 * w + 1) / n), 0.0)  # eq. 49
    tau_int = tau_raw * (1.0 + (2 * w + 1) / n) / (1.0 + 1.0 / n)
    tau_err = 2.0 * tau_raw * math.sqrt(abs(w + 0.5 - tau_raw) / n)  # eq. 42
    t_out = min(t_max, max(4 * w, 20))
    return GammaResult(
        mean=mean,
        err=math.sqrt(c_f / n),
        tau_int=tau_int,
        tau_int_err=tau_err,
        window=w,
        S=float(S),
        n=n,
        n_replicas=len(reps),
        variance=float(gamma[0]),
        rho=_freeze(rho[: t_out + 1]),
        rho_err=_freeze(rho_errors(rho, w, n, t_out)),
        tau_int_of_w=_freeze(tau_w[: t_out + 1]),
    )


def gamma_analysis(
    data: ArrayLike | Sequence[ArrayLike], S: float = 1.5, *, replica_means: bool = False
) -> GammaResult:
    """Gamma-method mean, error and τ_int of one primary observable (Wolff 2004, sec. 3.3).

    ``data``: a list of replicas ``(N_r,)``, an array ``(N, R)`` of R equal-length replicas, or a 1-D
    array ``(N,)``. ``S``: windowing parameter (eq. 52), 0 for no autocorrelation. ``replica_means``:
    subtract per-replica means (pyerrors' convention) instead of the global mean (eq. 31).
    A constant series gives ``err = 0``, ``tau_int = 0.5``.
    """
    return _analyze(as_replicas(data), S, replica_means)


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Central-difference gradient ∂f/∂x_α ≈ [f(x + h_α e_α) − f(x − h_α e_α)] / (2 h_α), shape ``(m,)``."""
    grad = np.empty(len(x))
    for a in range(len(x)):
        step = np.zeros(len(x))
        step[a] = h[a]
        grad[a] = (float(f(x + step)) - float(f(x - step))) / (2.0 * h[a])
    return grad


def gamma_derived(
    f: Callable[[np.ndarray], float],
    data_list: Sequence[ArrayLike | Sequence[ArrayLike]],
    S: float = 1.5,
    grad: Callable[[np.ndarray], ArrayLike] | ArrayLike | None = None,
    *,
    eps: float = 1e-6,
    replica_means: bool = False,
) -> GammaResult:
    """Gamma-method analysis of a derived quantity F = f(ā_1, …, ā_m) (Wolff 2004, sec. 3.2).

    ``f`` maps the vector of means, shape ``(m,)``, to a scalar. ``data_list``: m observables, each in
    any form ``gamma_analysis`` accepts, all with the same replica lengths (measured on the same
    configurations). ``grad``: ∂f/∂ā as an array ``(m,)`` or a callable of the means; by default
    central differences with steps h_α = eps (|ā_α| + sd(a_α)). The fluctuations are projected,
    a_F = Σ_α f_α a_α, and analysed like a primary observable; the returned mean is f(ā).
    """
    obs = [as_replicas(d) for d in data_list]
    if not obs:
        raise ValueError("data_list is empty")
    shape = [len(r) for r in obs[0]]
    if any([len(r) for r in reps] != shape for reps in obs):
        raise ValueError("all observables must have the same replica lengths")
    n = sum(shape)
    means = np.array([sum(float(r.sum()) for r in reps) / n for reps in obs])
    if grad is None:
        sds = np.array([np.std(np.concatenate(reps)) for reps in obs])
        h = eps * (np.abs(means) + sds)
        g = numerical_gradient(f, means, np.where(h > 0, h, eps))
    else:
        g = np.asarray(grad(means) if callable(grad) else grad, dtype=np.float64).reshape(-1)
    if g.shape != (len(obs),):
        raise ValueError(f"gradient has shape {g.shape}, expected ({len(obs)},)")
    projected = [sum(g[a] * obs[a][r] for a in range(len(obs))) for r in range(len(shape))]
    result = _analyze(projected, S, replica_means)
    return replace(result, mean=float(f(means)))

r"""Exact 2D U(1) Wilson gauge theory on a finite periodic L0 × L1 torus (character expansion).

Every plaquette weight is a class function of U_P = e^{iφ_P}; expanding it in characters χ_n = e^{inφ}
and integrating the links (each link is shared by two plaquettes with opposite orientation, and the
Haar measure is dθ/2π) leaves one sum over representations n ∈ ℤ. With V = L0·L1 plaquettes,

    Z = Σ_n I_n(β)^V,        I_n(β) = ∫_{−π}^{π} dφ/2π e^{β cos φ} e^{−inφ}   (modified Bessel I).

* Plaquette: ⟨cos θ_P⟩ = (1/V) ∂_β log Z = Σ_n w_n I_n'(β)/I_n(β), w_n = I_n^V / Z,
  I_n' = (I_{n−1} + I_{n+1})/2.
* Topology: Q = (1/2π) Σ_P φ_P with φ_P = arg U_P ∈ (−π, π]. Inserting e^{iϑQ} changes the plaquette
  weight to e^{β cos φ + iϑφ/2π}, still a class function, so

      Z(ϑ) = Σ_n c_n(ϑ)^V,   c_n(ϑ) = ĝ(n − ϑ/2π),   ĝ(k) = ∫_{−π}^{π} dφ/2π e^{β cos φ} cos(kφ)

  (real because e^{β cos φ} is even), and ⟨Q²⟩ = −∂²_ϑ log Z(ϑ)|_{ϑ=0}. Since Z'(0) = 0,

      ⟨Q²⟩ = Σ_n w_n [V b_n − V(V−1) a_n²],
      a_n = (1/2π) ∫ dφ/2π φ sin(nφ) e^{β cos φ} / I_n,   b_n = (1/4π²) ∫ dφ/2π φ² cos(nφ) e^{β cos φ} / I_n.

  The charge distribution is the Fourier series P(Q) = (1/2π) ∫ dϑ e^{−iϑQ} Z(ϑ)/Z(0).
* V → ∞: ⟨cos θ_P⟩ → I_1(β)/I_0(β) and ⟨Q²⟩/V → b_0.

Bessel functions are evaluated as exponentially scaled ratios I_n/I_0 (``scipy.special.ive``), the
φ-integrals by Gauss–Legendre quadrature (the integrands are analytic on [0, π]). For V ≤ 2, Q = 0
almost surely and ``q2`` returns 0. References: e.g. Wiese, Nucl. Phys. B 318 (1989) 153; Bonati,
Rossi, PRD 99 (2019) 054503 (θ-dependence of 2D U(1)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ive, logsumexp

TWO_PI = 2.0 * math.pi
_LOG_TINY = -745.0  # exp underflows below this
_MAX_ORDER = 400


def n_plaquettes(shape: int | Sequence[int]) -> int:
    """V for a 2D torus: ``shape`` is ``(L0, L1)``, or an int L meaning L × L."""
    if isinstance(shape, (int, np.integer)):
        extents = (int(shape), int(shape))
    else:
        extents = tuple(int(s) for s in shape)
    if len(extents) != 2 or min(extents) < 1:
        raise ValueError(f"the exact U(1) solution is for a 2D torus (L0, L1), got {shape!r}")
    return extents[0] * extents[1]


def log_bessel_ratio(n: np.ndarray, beta: float) -> np.ndarray:
    """log(I_n(β)/I_0(β)) for integer orders ``n`` (any shape); −inf where I_n underflows."""
    with np.errstate(divide="ignore"):
        return np.log(ive(np.abs(n), beta)) - np.log(ive(0, beta))


def _orders(beta: float, v: int) -> np.ndarray:
    """Orders n = −N..N whose weight (I_n/I_0)^V is not negligible, with two to spare."""
    n = np.arange(_MAX_ORDER + 1)
    logr = log_bessel_ratio(n, beta)
    significant = np.flatnonzero(v * logr > _LOG_TINY)
    top = min(int(significant[-1]) + 2 if significant.size else 2, _MAX_ORDER)
    return np.arange(-top, top + 1)


def _theta_orders(beta: float, v: int) -> np.ndarray:
    """Orders for ϑ ≠ 0: ĝ(n − ϑ/2π) decays only like 1/n (e^{iϑφ/2π} jumps at φ = ±π), so the sum
    is truncated where N^{1−V} ≲ 1e−16, with at most 128 orders (accuracy ~ 128^{1−V} for V ≤ 8)."""
    tail = min(math.ceil(10.0 ** (16.0 / max(v - 1, 1))), 128)
    top = max(int(_orders(beta, v)[-1]), tail)
    return np.arange(-top, top + 1)


def _quadrature(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes φ and weights on [0, π], normalised so Σ w h(φ) ≈ (1/π) ∫_0^π h."""
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    return 0.5 * math.pi * (x + 1.0), 0.5 * w


def phi_moments(beta: float, k: np.ndarray, n_nodes: int | None = None,
                which: Sequence[str] = ("g0", "m1", "m2")) -> dict[str, np.ndarray]:
    """Scaled Fourier moments of e^{β cos φ} on (−π, π], each divided by I_0(β), for real ``k`` (any shape).

    ``g0`` = ∫ dφ/2π e^{β cos φ} cos(kφ) / I_0 (= I_k/I_0 at integer k),
    ``m1`` = ∫ dφ/2π φ sin(kφ) e^{β cos φ} / I_0,  ``m2`` = ∫ dφ/2π φ² cos(kφ) e^{β cos φ} / I_0.
    """
    k = np.asarray(k, dtype=np.float64)
    if n_nodes is None:
        n_nodes = max(256, 4 * int(np.abs(k).max(initial=0.0)) + 128)
    phi, w = _quadrature(n_nodes)
    weight = w * np.exp(beta * (np.cos(phi) - 1.0)) / ive(0, beta)
    kphi = k[..., None] * phi
    out = {}
    if "g0" in which or "m2" in which:
        cos_k = np.cos(kphi)
        out.update(g0=cos_k @ weight, m2=cos_k @ (weight * phi * phi))
    if "m1" in which:
        out["m1"] = np.sin(kphi) @ (weight * phi)
    return {name: out[name] for name in which}


def log_z(beta: float, shape: int | Sequence[int], theta: float = 0.0) -> float:
    """log Z(ϑ) = log Σ_n ĝ(n − ϑ/2π)^V with the Haar measure Π dθ/2π (ϑ = 0: Σ_n I_n(β)^V)."""
    v = n_plaquettes(shape)
    n = _orders(beta, v)
    log_i0 = math.log(ive(0, beta)) + beta
    if theta == 0.0:
        return float(v * log_i0 + logsumexp(v * log_bessel_ratio(n, beta)))
    ratio = phi_moments(beta, _theta_orders(beta, v) - theta / TWO_PI, which=("g0",))["g0"]
    total = float(np.sum(ratio**v))
    if total <= 0.0:
        raise ValueError(f"Z(theta={theta}) = {total} is not positive; log Z is undefined there")
    return v * log_i0 + math.log(total)


def _log_weights(beta: float, v: int, n: np.ndarray) -> tuple[np.ndarray, float]:
    """log(I_n/I_0) and log Σ_n (I_n/I_0)^V."""
    logr = log_bessel_ratio(n, beta)
    return logr, float(logsumexp(v * logr))


def plaquette(beta: float, shape: int | Sequence[int]) -> float:
    """⟨cos θ_P⟩ = Σ_n w_n (I_{n−1} + I_{n+1}) / (2 I_n) on the torus ``shape``."""
    v = n_plaquettes(shape)
    n = _orders(beta, v)
    logr, log_norm = _log_weights(beta, v, n)
    keep = np.isfinite(logr)
    n, logr = n[keep], logr[keep]
    base = (v - 1) * logr - log_norm  # log(w_n / r_n)
    lower, upper = log_bessel_ratio(n - 1, beta), log_bessel_ratio(n + 1, beta)
    return float(0.5 * (np.exp(base + lower) + np.exp(base + upper)).sum())


def q2(beta: float, shape: int | Sequence[int]) -> float:
    """⟨Q²⟩ = −∂²_ϑ log Z(ϑ)|_0 = Σ_n w_n [V b_n − V(V−1) a_n²] (module docstring); 0 for V ≤ 2."""
    v = n_plaquettes(shape)
    if v <= 2:
        return 0.0
    n = _orders(beta, v)
    logr, log_norm = _log_weights(beta, v, n)
    keep = np.isfinite(logr)
    n, logr = n[keep], logr[keep]
    mom = phi_moments(beta, n)
    wb = np.exp((v - 1) * logr - log_norm) * mom["m2"] / TWO_PI**2  # w_n b_n
    wa2 = np.exp((v - 2) * logr - log_norm) * (mom["m1"] / TWO_PI) ** 2  # w_n a_n²
    return float(v * wb.sum() - v * (v - 1) * wa2.sum())


def chi_t(beta: float, shape: int | Sequence[int]) -> float:
    """Topological susceptibility ⟨Q²⟩/V on the torus ``shape``."""
    return q2(beta, shape) / n_plaquettes(shape)


def charge_distribution(beta: float, shape: int | Sequence[int], n_theta: int = 128
                        ) -> tuple[np.ndarray, np.ndarray]:
    """P(Q) for Q = −n_theta/2 .. n_theta/2 − 1, from Z(ϑ_j)/Z(0) at ϑ_j = 2πj/n_theta (an FFT).

    Returns ``(charges (n_theta,), probabilities (n_theta,))``; the trapezoid rule in ϑ is exact up to
    aliasing P(Q ± n_theta), negligible when n_theta is well beyond the width of the distribution.
    """
    v = n_plaquettes(shape)
    _, log_norm = _log_weights(beta, v, _orders(beta, v))
    n = _theta_orders(beta, v)
    thetas = TWO_PI * np.arange(n_theta) / n_theta
    ratio = phi_moments(beta, n[None, :] - thetas[:, None] / TWO_PI, which=("g0",))["g0"]  # (n_theta, 2N+1)
    with np.errstate(divide="ignore"):
        log_abs = np.log(np.abs(ratio))
    z_ratio = np.sum(np.sign(ratio) ** v * np.exp(v * log_abs - log_norm), axis=1)
    probs = np.real(np.fft.fft(z_ratio)) / n_theta  # Σ_j e^{−iϑ_j Q} Z(ϑ_j)/Z(0) / n_theta
    charges = np.fft.fftfreq(n_theta, d=1.0 / n_theta).astype(np.int64)
    order = np.argsort(charges)
    return charges[order], probs[order]


def plaquette_infinite(beta: float) -> float:
    """V → ∞ limit of ⟨cos θ_P⟩: I_1(β)/I_0(β)."""
    return float(ive(1, beta) / ive(0, beta))


def chi_t_infinite(beta: float) -> float:
    """V → ∞ limit of ⟨Q²⟩/V: ⟨(φ/2π)²⟩ with density e^{β cos φ}/I_0(β) on (−π, π]."""
    return float(phi_moments(beta, np.zeros(1), which=("m2",))["m2"][0] / TWO_PI**2)

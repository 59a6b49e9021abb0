"""Exact 2D SU(N) Wilson gauge theory on a finite periodic lattice, by the character expansion.

Expand the Boltzmann weight of one plaquette in irreducible characters χ_r,

    e^{(β/N) Re tr U} = Σ_r c_r χ_r(U),        c_r(β) = ∫ dU χ_r(U)^* e^{(β/N) Re tr U}.

On a 2D torus every link is shared by exactly two plaquettes, and integrating the links out with
∫ dU χ_r(AU) χ_s(U^{-1}B) = δ_rs χ_r(AB)/d_r leaves (surface of genus g = 1, V plaquettes)

    Z = Σ_r d_r^{2−2g} (c_r / d_r)^V = Σ_r (c_r / d_r)^V,

and ⟨Re tr U_P / N⟩ = (1/V) ∂_β log Z = Σ_r w_r (∂_β log c_r) / Σ_r w_r with w_r = (c_r/d_r)^V.
As V → ∞ only the trivial representation survives: ⟨Re tr U_P / N⟩ → ∂_β log c_0.

Coefficients. Irreps of SU(N) are Young diagrams λ_1 ≥ … ≥ λ_{N−1} ≥ λ_N = 0; d_λ is the Weyl
dimension formula. For U(N) the Gross–Witten/Bars determinant formula gives, with x = β/N,
∫_{U(N)} dU χ_λ(U)^* e^{(x/2)(tr U + tr U†)} = det[I_{λ_i − i + j}(x)]_{i,j=1..N}; restricting to
SU(N) inserts Σ_{q∈Z} det(U)^q, which shifts every λ_i by q:

    c_λ(β) = Σ_{q ∈ Z} det[I_{λ_i + q − i + j}(β/N)].

For SU(2) this is c_j = I_{2j} − I_{2j+2} = 2(2j+1) I_{2j+1}(β)/β (``su2_coefficients``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ive

_TINY = 1e-300


def irreps(n: int, max_row: int) -> list[tuple[int, ...]]:
    """SU(N) irreps as Young diagrams (λ_1, …, λ_{N−1}, 0) with λ_1 ≤ ``max_row``, trivial one first."""
    out = []
    for rows in itertools.combinations_with_replacement(range(max_row + 1), n - 1):
        out.append((*sorted(rows, reverse=True), 0))
    return sorted(out, key=lambda lam: (sum(lam), lam))


def dimension(lam: Sequence[int]) -> int:
    """Weyl dimension d_λ = Π_{i<j} (λ_i − λ_j + j − i) / (j − i)."""
    num, den = 1, 1
    n = len(lam)
    for i in range(n):
        for j in range(i + 1, n):
            num *= lam[i] - lam[j] + j - i
            den *= j - i
    return num // den


def coefficients(reps: Sequence[Sequence[int]], beta: float, max_charge: int = 16) -> tuple[np.ndarray, ...]:
    """(e^{−β} c_λ(β), ∂_β log c_λ(β)) for SU(N) irreps ``reps`` (each of length N), as arrays.

    The U(1) charges run over q ∈ [−max λ_1 − max_charge, max_charge]; the factor e^{−β} (common to all
    λ) avoids overflow. ∂_x det M = Σ_k det(M with row k differentiated), I_n' = (I_{n−1} + I_{n+1})/2.
    """
    lam = np.asarray(reps, dtype=np.int64)                       # (R, N)
    n = lam.shape[1]
    x = beta / n
    charges = np.arange(-lam[:, 0].max() - max_charge, max_charge + 1)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    order = lam[:, None, :, None] - i + j + charges[None, :, None, None]   # (R, n_q, N, N)
    value = ive(order, x)
    deriv = 0.5 * (ive(order - 1, x) + ive(order + 1, x))
    c = np.linalg.det(value).sum(1)
    dc = np.zeros_like(c)
    for k in range(n):
        m = value.copy()
        m[:, :, k, :] = deriv[:, :, k, :]
        dc += np.linalg.det(m).sum(1)
    return c, dc / c / n


@dataclass(frozen=True)
class CharacterTable:
    """Truncated character expansion of SU(N) at coupling β: irreps ``reps``, dimensions ``dims``,
    ``log_c`` = log(e^{−β} c_λ) and ``dlog_c`` = ∂_β log c_λ, each of length ``len(reps)``."""

    n: int
    beta: float
    reps: tuple[tuple[int, ...], ...]
    dims: np.ndarray
    log_c: np.ndarray
    dlog_c: np.ndarray


def character_table(n: int, beta: float, max_row: int = 24) -> CharacterTable:
    """Coefficients of every SU(N) irrep with λ_1 ≤ ``max_row`` (β > 0)."""
    if beta <= 0:
        raise ValueError(f"beta = {beta} must be positive")
    reps = irreps(n, max_row)
    c, dlog_c = coefficients(reps, beta)
    return CharacterTable(
        n=n, beta=beta, reps=tuple(reps), dims=np.array([dimension(lam) for lam in reps], dtype=float),
        log_c=np.log(np.maximum(c, _TINY)), dlog_c=dlog_c,
    )


def plaquette_from_table(table: CharacterTable, n_plaquettes: int | float) -> float:
    """⟨Re tr U_P / N⟩ on a torus of ``n_plaquettes`` plaquettes (``math.inf`` for infinite volume)."""
    if math.isinf(n_plaquettes):
        return float(table.dlog_c[0])
    log_w = n_plaquettes * (table.log_c - np.log(table.dims))
    w = np.exp(log_w - log_w.max())
    return float((w * table.dlog_c).sum() / w.sum())


def plaquette(n: int, beta: float, shape: Sequence[int] | None = None, max_row: int = 24) -> float:
    """Exact ⟨Re tr U_P / N⟩ of 2D SU(N) Wilson theory on an L_0 × L_1 torus (``shape``), or in
    infinite volume for ``shape=None``. ``max_row`` truncates the irreps at λ_1 ≤ max_row."""
    if shape is not None and len(shape) != 2:
        raise ValueError(f"the character expansion here is for D = 2, got shape {tuple(shape)}")
    n_plaq = math.inf if shape is None else math.prod(shape)
    return plaquette_from_table(character_table(n, beta, max_row), n_plaq)


def su2_coefficients(beta: float, j_max: float = 12) -> tuple[np.ndarray, np.ndarray]:
    """SU(2) spins j = 0, ½, …, ``j_max`` and e^{−β} c_j with c_j = 2(2j+1) I_{2j+1}(β) / β."""
    spins = np.arange(0, 2 * j_max + 1) / 2
    return spins, 2 * (2 * spins + 1) * ive(2 * spins + 1, beta) / beta


def su2_plaquette_infinite(beta: float) -> float:
    """Infinite-volume SU(2): ⟨½ tr U_P⟩ = ∂_β log c_0 = I_2(β) / I_1(β)."""
    return float(ive(2, beta) / ive(1, beta))

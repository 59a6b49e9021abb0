"""Cabibbo–Marinari heatbath and overrelaxation for SU(N) Wilson gauge theory, compiled with numba.

Links are complex matrices ``(B, D, V, N, N)`` inside numba (``(B, D, *L, N, N)`` outside). With the
staple sum A_μ(x) of ``lattice.wilson`` the local action of U = U_μ(x) is −(β/N) Re tr(U A). For each of
the N(N−1)/2 SU(2) subgroups (i, j), i < j (Cabibbo & Marinari, PLB 119 (1982) 387), U → R U with R the
embedding of r ∈ SU(2) in rows/columns i, j. Then Re tr(R U A) = Re tr(r w) + const, w the (i, j) block
of W = U A, and only the quaternion part of w matters:

    v = [[a, c], [−c*, a*]],  a = (w_ii + w_jj*)/2,  c = (w_ij − w_ji*)/2,  v = k V,  k = sqrt(|a|² + |c|²),

so Re tr(r w) = 2k x₀(r V) + const, with X = x₀ + i x·σ. By Haar invariance X = r V has density
∝ sqrt(1 − x₀²) e^{α x₀} dx₀ dΩ₂, α = 2βk/N; x₀ is drawn by Creutz's method (PRD 21 (1980) 2308) for
α < 2 and by Kennedy–Pendleton (PLB 156 (1985) 393) above, the direction uniformly, and r = X V†.

Overrelaxation in a subgroup: r = V†², which turns v = kV into kV† and so keeps Re tr(r w) (so S),
is an involution and preserves the Haar measure. For SU(2) this is the usual U → V† U† V†.

Every link is re-unitarised at the end of each step (Gram–Schmidt on the rows, then det → 1) to stop
the drift of round-off; the correction is O(1e-16). Links are updated one at a time (direction by direction,
sites in checkerboard order) with the current values of their neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch

from lattice.sun import complex_dtype
from lattice.wilson import SUN
from mcmc.kernels.local.common import (
    LocalGaugeKernel,
    check_cpu,
    uniform,
)

_CREUTZ_BELOW = 2.0     # α below which Creutz's method beats Kennedy–Pendleton in acceptance
_ALPHA_UNIFORM = 1e-8   # α below which e^{α x₀} is 1 to double precision
_K_DEGENERATE = 1e-300  # a subgroup staple this small has no direction; overrelaxation skips it


@numba.njit(cache=True, error_model="numpy")
def su2_x0(alpha: float, rng: np.ndarray, b: int) -> float:
    """x₀ ∈ [−1, 1] with density ∝ sqrt(1 − x₀²) e^{α x₀}, α ≥ 0.

    Creutz: x₀ = 1 + log(u + (1 − u) e^{−2α}) / α from e^{α x₀}, kept with probability sqrt(1 − x₀²).
    Kennedy–Pendleton: λ² = −(log u₁ + cos²(2π u₂) log u₃) / (2α) ~ Γ(3/2, 2α), kept with probability
    sqrt(1 − λ²); x₀ = 1 − 2λ².
    """
    if alpha < _CREUTZ_BELOW:
        while True:
            u = uniform(rng, b)
            if alpha < _ALPHA_UNIFORM:
                x0 = 2.0 * u - 1.0
            else:
                x0 = 1.0 + math.log(u + (1.0 - u) * math.exp(-2.0 * alpha)) / alpha
            r = uniform(rng, b)
            if r * r < 1.0 - x0 * x0:
                return x0
    while True:
        c = math.cos(2.0 * math.pi * uniform(rng, b))
        lam2 = -(math.log(uniform(rng, b)) + c * c * math.log(uniform(rng, b))) / (2.0 * alpha)
        r = uniform(rng, b)
        if r * r <= 1.0 - lam2:
            return 1.0 - 2.0 * lam2


@numba.njit(cache=True, error_model="numpy")
def su2_heatbath(alpha: float, rng: np.ndarray, b: int) -> tuple[complex, complex]:
    """X ∈ SU(2) with density ∝ e^{α x₀} dX (Haar dX), as the quaternion pair (p, q) of
    X = [[p, q], [−q*, p*]], p = x₀ + i x₃, q = x₂ + i x₁, the direction x/|x| uniform on S²."""
    x0 = su2_x0(alpha, rng, b)
    norm = math.sqrt(max(0.0, 1.0 - x0 * x0))
    cos_t = 2.0 * uniform(rng, b) - 1.0
    sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    phi = 2.0 * math.pi * uniform(rng, b)
    x1, x2, x3 = norm * sin_t * math.cos(phi), norm * sin_t * math.sin(phi), norm * cos_t
    return complex(x0, x3), complex(x2, x1)


@numba.njit(cache=True, error_model="numpy")
def qmul(p1: complex, q1: complex, p2: complex, q2: complex) -> tuple[complex, complex]:
    """Product of quaternion pairs: (p₁, q₁)(p₂, q₂) = (p₁p₂ − q₁q₂*, p₁q₂ + q₁p₂*)."""
    return p1 * p2 - q1 * q2.conjugate(), p1 * q2 + q1 * p2.conjugate()


@numba.njit(cache=True, error_model="numpy")
def staple(u: np.ndarray, nbr: np.ndarray, b: int, mu: int, x: int, out: np.ndarray, tmp: np.ndarray) -> None:
    """A_μ(x) = Σ_{ν≠μ} [U_ν(x+μ) U_μ(x+ν)† U_ν(x)† + U_ν(x+μ−ν)† U_μ(x−ν)† U_ν(x−ν)] into ``out (N, N)``
    for chain ``b`` of ``u (B, D, V, N, N)``; ``tmp (N, N)`` is scratch."""
    n = u.shape[-1]
    out[:, :] = 0.0
    xp = nbr[x, mu, 0]
    for nu in range(u.shape[1]):
        if nu == mu:
            continue
        xm, xpm = nbr[x, nu, 1], nbr[xp, nu, 1]
        upper_a, upper_b, upper_c = u[b, nu, xp], u[b, mu, nbr[x, nu, 0]], u[b, nu, x]
        lower_a, lower_b, lower_c = u[b, mu, xm], u[b, nu, xpm], u[b, nu, xm]
        for i in range(n):  # tmp = U_ν(x+μ) U_μ(x+ν)†
            for j in range(n):
                s = 0j
                for m in range(n):
                    s += upper_a[i, m] * upper_b[j, m].conjugate()
                tmp[i, j] = s
        for i in range(n):  # out += tmp U_ν(x)†
            for j in range(n):
                s = 0j
                for m in range(n):
                    s += tmp[i, m] * upper_c[j, m].conjugate()
                out[i, j] += s
        for i in range(n):  # tmp = U_μ(x−ν) U_ν(x+μ−ν)
            for j in range(n):
                s = 0j
                for m in range(n):
                    s += lower_a[i, m] * lower_b[m, j]
                tmp[i, j] = s
        for i in range(n):  # out += tmp† U_ν(x−ν)
            for j in range(n):
                s = 0j
                for m in range(n):
                    s += tmp[m, i].conjugate() * lower_c[m, j]
                out[i, j] += s


@numba.njit(cache=True, error_model="numpy")
def _normalise_rows(m: np.ndarray, n_rows: int) -> None:
    """Gram–Schmidt on the first ``n_rows`` rows of ``m (N, N)``, in place."""
    n = m.shape[1]
    for i in range(n_rows):
        for k in range(i):
            dot = 0j
            for j in range(n):
                dot += m[k, j].conjugate() * m[i, j]
            for j in range(n):
                m[i, j] -= dot * m[k, j]
        norm = 0.0
        for j in range(n):
            norm += m[i, j].real ** 2 + m[i, j].imag ** 2
        norm = 1.0 / math.sqrt(norm)
        for j in range(n):
            m[i, j] *= norm


@numba.njit(cache=True, error_model="numpy")
def _det(m: np.ndarray, lu: np.ndarray) -> complex:
    """det ``m (N, N)`` by LU with partial pivoting in the scratch ``lu (N, N)``."""
    n = m.shape[0]
    for i in range(n):
        for j in range(n):
            lu[i, j] = m[i, j]
    det = 1.0 + 0j
    for c in range(n):
        piv, best = c, -1.0
        for r in range(c, n):
            size = lu[r, c].real ** 2 + lu[r, c].imag ** 2
            if size > best:
                piv, best = r, size
        if piv != c:
            for j in range(n):
                swap = lu[c, j]
                lu[c, j] = lu[piv, j]
                lu[piv, j] = swap
            det = -det
        pivot = lu[c, c]
        det *= pivot
        inverse = pivot.conjugate() / best
        for r in range(c + 1, n):
            f = lu[r, c] * inverse
            for j in range(c, n):
                lu[r, j] -= f * lu[c, j]
    return det


@numba.njit(cache=True, error_model="numpy")
def reunitarise(m: np.ndarray, lu: np.ndarray) -> None:
    """Project ``m (N, N)`` in place back onto SU(N): Gram–Schmidt on the first N−1 rows, then the last row
    from them so that det = 1: (−m₀₁*, m₀₀*) for N = 2, (m₀ × m₁)* for N = 3, and otherwise Gram–Schmidt
    times det(m)* (``lu (N, N)`` is scratch)."""
    n = m.shape[0]
    _normalise_rows(m, n - 1)
    if n == 2:
        m[1, 0], m[1, 1] = -m[0, 1].conjugate(), m[0, 0].conjugate()
    elif n == 3:
        m[2, 0] = (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]).conjugate()
        m[2, 1] = (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]).conjugate()
        m[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]).conjugate()
    else:
        _normalise_rows(m, n)
        det = _det(m, lu)
        phase = det.conjugate() / math.sqrt(det.real ** 2 + det.imag ** 2)
        for j in range(n):
            m[n - 1, j] *= phase


@numba.njit(cache=True, error_model="numpy")
def rotate_rows(m: np.ndarray, i: int, j: int, p: complex, q: complex) -> None:
    """Rows (i, j) of ``m`` ← r · rows (i, j) with r = [[p, q], [−q*, p*]]."""
    for col in range(m.shape[1]):
        a, c = m[i, col], m[j, col]
        m[i, col] = p * a + q * c
        m[j, col] = -q.conjugate() * a + p.conjugate() * c


@numba.njit(cache=True, error_model="numpy")
def update_link(link: np.ndarray, w: np.ndarray, coupling: float, heat: bool, rng: np.ndarray,
                b: int) -> float:
    """Cabibbo–Marinari pass over all subgroups of one link ``link (N, N)``, with ``w = link · A`` (kept
    current); ``coupling`` = β/N. Heatbath if ``heat``, else overrelaxation. Returns −(β/N) Δ Re tr W."""
    n = link.shape[0]
    d_action = 0.0
    for i in range(n - 1):
        for j in range(i + 1, n):
            a = 0.5 * (w[i, i] + w[j, j].conjugate())
            c = 0.5 * (w[i, j] - w[j, i].conjugate())
            k = math.sqrt(a.real ** 2 + a.imag ** 2 + c.real ** 2 + c.imag ** 2)
            if heat:
                p, q = su2_heatbath(2.0 * coupling * k, rng, b)
                if k > 0.0:
                    p, q = qmul(p, q, a.conjugate() / k, -c / k)  # r = X V†
            elif k > _K_DEGENERATE:
                p, q = qmul(a.conjugate() / k, -c / k, a.conjugate() / k, -c / k)  # r = V†²
            else:
                continue
            before = w[i, i].real + w[j, j].real
            rotate_rows(link, i, j, p, q)
            rotate_rows(w, i, j, p, q)
            d_action -= coupling * (w[i, i].real + w[j, j].real - before)
    return d_action


@numba.njit(cache=True, error_model="numpy")
def sun_sweeps(u: np.ndarray, nbr: np.ndarray, visits: np.ndarray, rng: np.ndarray,
               beta: float) -> np.ndarray:
    """The link updates ``visits`` (rows ``(heat, μ, x)`` of ``common.link_visits``: heatbath where heat
    is 1, overrelaxation where it is 0) of every chain, in place on ``u (B, D, V, N, N)`` complex128, then
    every link reunitarised. Returns the change of S per chain ``(B,)``."""
    n_chains, dim, n = u.shape[0], u.shape[1], u.shape[-1]
    coupling = beta / n
    a = np.empty((n, n), dtype=np.complex128)
    w = np.empty((n, n), dtype=np.complex128)
    tmp = np.empty((n, n), dtype=np.complex128)
    d_action = np.zeros(n_chains)
    for b in range(n_chains):
        for k in range(visits.shape[0]):
            heat, mu, x = visits[k, 0] == 1, visits[k, 1], visits[k, 2]
            link = u[b, mu, x]
            staple(u, nbr, b, mu, x, a, tmp)
            for i in range(n):
                for j in range(n):
                    s = 0j
                    for m in range(n):
                        s += link[i, m] * a[m, j]
                    w[i, j] = s
            d_action[b] += update_link(link, w, coupling, heat, rng, b)
        for mu in range(dim):
            for x in range(u.shape[2]):
                reunitarise(u[b, mu, x], tmp)
    return d_action


@dataclass(frozen=True)
class LocalSUN(LocalGaugeKernel):
    """Cabibbo–Marinari heatbath + overrelaxation kernel for ``SUN`` links ``(B, D, *L, N, N)`` (CPU only,
    any N ≥ 2 and D ≥ 2). One ``step`` is one heatbath sweep followed by ``n_overrelax`` overrelaxation
    sweeps; heatbath always moves, so ``StepInfo.accept_prob`` is 1."""

    theory: SUN

    def sweeps(self, x: torch.Tensor, generator: torch.Generator | None, n_heatbath: int = 1,
               n_overrelax: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Run sweeps from links ``x (B, D, *L, N, N)``; returns the new links (same dtype) and the change
        of S ``(B,)``. ``generator`` may be ``None`` only when ``n_heatbath == 0``; ``n_overrelax=None``
        uses the kernel's setting."""
        check_cpu(x)
        n_chains, dim, n = x.shape[0], x.shape[1], self.theory.N
        links = x.detach().to(torch.complex128).reshape(n_chains, dim, -1, n, n).numpy().copy()
        d_action = self._run_sweeps(sun_sweeps, links, generator, n_heatbath, n_overrelax)
        return torch.from_numpy(links).reshape(x.shape).to(complex_dtype(x.dtype)), d_action

"""SU(N) group and algebra operations on batched complex matrices ``(..., N, N)``.

Link fields are ``(B, D, *L, N, N)``; every function here acts on the last two axes and broadcasts over
the rest.

Algebra convention. su(N) is represented by traceless anti-Hermitian matrices X (X† = −X, tr X = 0),
with the basis T_a = i λ_a / 2 (λ_a the generalised Gell-Mann matrices, tr λ_a λ_b = 2 δ_ab), so that

    tr(T_a T_b) = −½ δ_ab,      X = Σ_a x_a T_a,      x_a = −2 tr(T_a X),
    −tr(X²) = ½ Σ_a x_a² = Σ_ij |X_ij|².

HMC momenta P = Σ_a p_a T_a with p_a ~ N(0, 1) have density ∝ exp(tr P²) = exp(−½ Σ p_a²); the kinetic
energy is K = −tr P² = ½ Σ_a p_a² (``mcmc.kernels.lie``).

The exponential map: closed form for SU(2), Cayley–Hamilton with the Morningstar–Peardon coefficients
for SU(3) (PRD 69 (2004) 054501), and ``torch.linalg.matrix_exp`` for N ≥ 4.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

# c1 = ½ tr Q² below which the SU(3) exponential uses its Taylor series instead of the closed form.
_SU3_TAYLOR_C1 = 1e-4
_SU3_TAYLOR_ORDER = 10


def complex_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """The complex dtype holding links for a card dtype: float64 → complex128, float32 → complex64.

    Complex dtypes pass through; ``None`` means complex128.
    """
    if dtype is None or dtype == torch.float64 or dtype == torch.complex128:
        return torch.complex128
    if dtype == torch.float32 or dtype == torch.complex64:
        return torch.complex64
    raise ValueError(f"no complex dtype for {dtype}; expected float64, float32, complex128 or complex64")


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of a complex one (complex128 → float64, complex64 → float32)."""
    return {torch.complex128: torch.float64, torch.complex64: torch.float32}.get(dtype, dtype)


def dagger(u: torch.Tensor) -> torch.Tensor:
    """Hermitian conjugate U† on the last two axes."""
    return u.conj().transpose(-1, -2)


def trace(u: torch.Tensor) -> torch.Tensor:
    """tr U on the last two axes: ``(..., N, N) -> (...)``."""
    return u.diagonal(dim1=-2, dim2=-1).sum(-1)


def retrace_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re tr(A B†) = Re Σ_ij A_ij conj(B_ij) without forming the product: ``(..., N, N) -> (...)``."""
    return (a.real * b.real + a.imag * b.imag).sum((-2, -1))


def identity(shape: Sequence[int], n: int, dtype: torch.dtype = torch.complex128,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Unit matrices of shape ``(*shape, N, N)``."""
    return torch.eye(n, dtype=dtype, device=device).expand(*shape, n, n).clone()


@functools.lru_cache(maxsize=32)
def _generators_cached(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    mats = []
    for j in range(n):
        for k in range(j + 1, n):
            sym = torch.zeros(n, n, dtype=torch.complex128)
            sym[j, k] = sym[k, j] = 1.0
            asym = torch.zeros(n, n, dtype=torch.complex128)
            asym[j, k], asym[k, j] = -1j, 1j
            mats += [sym, asym]
    for ell in range(1, n):
        diag = torch.zeros(n, dtype=torch.complex128)
        diag[:ell] = 1.0
        diag[ell] = -ell
        mats.append(torch.diag(diag * math.sqrt(2.0 / (ell * (ell + 1)))))
    lambdas = torch.stack(mats)  # generalised Gell-Mann matrices, tr λ_a λ_b = 2 δ_ab
    return (0.5j * lambdas).to(dtype=dtype, device=device)


def generators(n: int, dtype: torch.dtype = torch.complex128,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The basis T_a = i λ_a / 2 of su(N), shape ``(N²−1, N, N)``; tr(T_a T_b) = −½ δ_ab."""
    return _generators_cached(n, dtype, str(torch.device(device) if device is not None else "cpu"))


def algebra_from_coords(x: torch.Tensor, n: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """X = Σ_a x_a T_a from real coordinates ``x`` of shape ``(..., N²−1)``; returns ``(..., N, N)``."""
    t = generators(n, complex_dtype(dtype or x.dtype), x.device)
    return torch.einsum("...a,aij->...ij", x.to(t.dtype), t)


def algebra_coords(x: torch.Tensor) -> torch.Tensor:
    """Real coordinates x_a = −2 tr(T_a X) of algebra elements ``(..., N, N)``; returns ``(..., N²−1)``."""
    t = generators(x.shape[-1], x.dtype, x.device)
    return (-2.0 * torch.einsum("aij,...ji->...a", t, x)).real


def project_algebra(w: torch.Tensor) -> torch.Tensor:
    """Traceless anti-Hermitian part Π(W) = (W − W†)/2 − tr(W − W†)/(2N) · 1 of ``(..., N, N)``.

    Π is the orthogonal projection onto su(N) for the inner product Re tr(A† B), and
    Re tr(T_a W) = tr(T_a Π(W)) for every generator.
    """
    a = 0.5 * (w - dagger(w))
    n = w.shape[-1]
    tr = trace(a) / n
    return a - tr[..., None, None] * torch.eye(n, dtype=w.dtype, device=w.device)


def gaussian_algebra(shape: Sequence[int], n: int, generator: torch.Generator,
                     dtype: torch.dtype = torch.complex128,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """P = Σ_a p_a T_a with p_a ~ N(0, 1) i.i.d., shape ``(*shape, N, N)``: density ∝ exp(tr P²).

    Exactly ``prod(shape) · (N²−1)`` real normal numbers are drawn from ``generator``.
    """
    cdt = complex_dtype(dtype)
    p = torch.randn((*shape, n * n - 1), generator=generator, dtype=real_dtype(cdt), device=device)
    return algebra_from_coords(p, n, cdt)


def det_to_special(u: torch.Tensor) -> torch.Tensor:
    """Divide a unitary ``(..., N, N)`` by det(U)^{1/N} (principal branch), so that det = 1."""
    det = torch.linalg.det(u)
    phase = torch.exp(-1j * torch.angle(det) / u.shape[-1]).to(u.dtype)
    return u * phase[..., None, None]


def haar(shape: Sequence[int], n: int, generator: torch.Generator, dtype: torch.dtype = torch.complex128,
         device: torch.device | str | None = None) -> torch.Tensor:
    """Haar-random SU(N) matrices of shape ``(*shape, N, N)``.

    Mezzadri, Notices AMS 54 (2007) 592: Z with i.i.d. standard complex normal entries, Z = QR,
    Q ← Q diag(R_ii/|R_ii|) is Haar on U(N); dividing by det(Q)^{1/N} multiplies a Haar SU(N)
    element by a random centre element, which leaves it Haar distributed.
    """
    cdt = complex_dtype(dtype)
    rdt = real_dtype(cdt)
    z = torch.randn((*shape, n, n, 2), generator=generator, dtype=rdt, device=device)
    q, r = torch.linalg.qr(torch.view_as_complex(z))
    d = r.diagonal(dim1=-2, dim2=-1)
    q = q * (d / d.abs())[..., None, :]
    return det_to_special(q)


def project_su(w: torch.Tensor) -> torch.Tensor:
    """Projection of ``(..., N, N)`` onto SU(N): the unitary polar factor U V† of W = U Σ V†
    (the nearest unitary in the Frobenius norm), then divided by det^{1/N}."""
    u, _, vh = torch.linalg.svd(w)
    return det_to_special(u @ vh)


def reunitarize(u: torch.Tensor) -> torch.Tensor:
    """Pull nearly-SU(N) matrices ``(..., N, N)`` back onto SU(N) cheaply: one Newton–Schulz step towards
    the unitary polar factor, U ← U (3 − U†U) / 2 (squares the deviation from unitarity), then divide
    by det^{1/N}. For drifts from rounding (single precision); ``project_su`` is the exact projection."""
    eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
    u = 0.5 * u @ (3.0 * eye - dagger(u) @ u)
    return det_to_special(u)


def unitarity_violation(u: torch.Tensor) -> tuple[float, float]:
    """max |U†U − 1| and max |det U − 1| over the batch (diagnostics and tests)."""
    n = u.shape[-1]
    eye = torch.eye(n, dtype=u.dtype, device=u.device)
    unit = (dagger(u) @ u - eye).abs().max().item()
    det = (torch.linalg.det(u) - 1).abs().max().item()
    return unit, det


def expm_su2(x: torch.Tensor) -> torch.Tensor:
    """exp(X) for X ∈ su(2), ``(..., 2, 2)``: with X = i a·σ, X² = −|a|², so
    exp(X) = cos|a| · 1 + (sin|a| / |a|) X, where |a|² = −½ tr X²."""
    theta = torch.sqrt(torch.clamp((-0.5 * trace(x @ x)).real, min=0.0))
    eye = torch.eye(2, dtype=x.dtype, device=x.device)
    cos = torch.cos(theta)[..., None, None]
    sinc = torch.sinc(theta / math.pi)[..., None, None]
    return cos * eye + sinc * x


def _expm_taylor(x: torch.Tensor, order: int) -> torch.Tensor:
    """Σ_{k ≤ order} X^k / k! by Horner's rule (for small X)."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    out = eye + x / order
    for k in range(order - 1, 0, -1):
        out = eye + (x @ out) / k
    return out


def _su3_coefficients(c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Morningstar–Peardon f_0, f_1, f_2 with exp(iQ) = f_0 + f_1 Q + f_2 Q²,
    for c0 = det Q ≥ 0 and c1 = ½ tr Q² > 0 (real tensors of the batch shape)."""
    c0_max = 2.0 * (c1 / 3.0) ** 1.5
    theta = torch.arccos(torch.clamp(c0 / c0_max, -1.0, 1.0))
    u = torch.sqrt(c1 / 3.0) * torch.cos(theta / 3.0)
    w = torch.sqrt(c1) * torch.sin(theta / 3.0)
    u2, w2 = u * u, w * w
    cos_w, xi0 = torch.cos(w), torch.sinc(w / math.pi)
    e2iu = torch.polar(torch.ones_like(u), 2.0 * u)
    emiu = torch.polar(torch.ones_like(u), -u)
    h0 = (u2 - w2) * e2iu + emiu * (8.0 * u2 * cos_w + 2j * u * (3.0 * u2 + w2) * xi0)
    h1 = 2.0 * u * e2iu - emiu * (2.0 * u * cos_w - 1j * (3.0 * u2 - w2) * xi0)
    h2 = e2iu - emiu * (cos_w + 3j * u * xi0)
    denom = 9.0 * u2 - w2
    return h0 / denom, h1 / denom, h2 / denom


def expm_su3(x: torch.Tensor) -> torch.Tensor:
    """exp(X) for X ∈ su(3), ``(..., 3, 3)``, by Cayley–Hamilton (Morningstar & Peardon 2004).

    With Q = −iX Hermitian traceless, c0 = det Q = ⅓ tr Q³ and c1 = ½ tr Q²,
    exp(iQ) = f_0 + f_1 Q + f_2 Q²; for c0 < 0, f_j(−c0) = (−1)^j f_j(c0)^*. Tiny X (c1 below
    ``_SU3_TAYLOR_C1``) use a Taylor series, where the closed form would divide 0 by 0.
    """
    q = -1j * x
    q2 = q @ q
    c1 = 0.5 * trace(q2).real
    c0 = (trace(q2 @ q).real / 3.0)
    small = c1 < _SU3_TAYLOR_C1
    c1_safe = torch.where(small, torch.ones_like(c1), c1)
    negative = c0 < 0
    f0, f1, f2 = _su3_coefficients(c0.abs(), c1_safe)
    f0 = torch.where(negative, f0.conj(), f0)
    f1 = torch.where(negative, -f1.conj(), f1)
    f2 = torch.where(negative, f2.conj(), f2)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    out = f0[..., None, None].to(x.dtype) * eye + f1[..., None, None].to(x.dtype) * q \
        + f2[..., None, None].to(x.dtype) * q2
    if bool(small.any()):
        out = torch.where(small[..., None, None], _expm_taylor(x, _SU3_TAYLOR_ORDER), out)
    return out


def expm_su(x: torch.Tensor) -> torch.Tensor:
    """exp(X) for X ∈ su(N), ``(..., N, N)``: closed forms for N = 2, 3, ``matrix_exp`` otherwise."""
    n = x.shape[-1]
    if n == 2:
        return expm_su2(x)
    if n == 3:
        return expm_su3(x)
    return torch.linalg.matrix_exp(x)

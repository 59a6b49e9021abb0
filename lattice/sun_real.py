"""SU(N) matrix products and the Wilson force written out elementwise on real and imaginary parts.

A link field ``u (B, D, *L, N, N)`` complex is handled here as its real view
``torch.view_as_real(u)``, shape ``(B, D, *L, N, N, 2)`` (last axis: real, imaginary part). Products are
sums over k of broadcast elementwise real products,

    Re (A B)_ij = Σ_k Re A_ik Re B_kj − Im A_ik Im B_kj,
    Im (A B)_ij = Σ_k Re A_ik Im B_kj + Im A_ik Re B_kj,

with the daggered variants A B† and A† B obtained by transposing indices and flipping the sign of an
imaginary part, never by materialising a conjugate transpose. Written this way, the force is a graph of
real elementwise operations and short reductions that ``torch.compile`` fuses into a few kernels (its
code generators do not fuse complex arithmetic, and a batched matmul of 3×3 matrices uses a sliver of a
GPU). In eager mode a batched complex ``matmul`` is faster on CPUs, so ``lattice.wilson`` keeps it, and
this module is the fused path (``mcmc.kernels.compiled``). Conventions as in ``lattice.wilson`` and
``lattice.sun``.
"""

from __future__ import annotations

import torch

from lattice.geometry import shift
from lattice.wilson import planes


def _parts(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return a[..., 0], a[..., 1]


def _pair(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    return torch.stack((re, im), dim=-1)


def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A B for real views ``(..., N, N, 2)``; returns ``(..., N, N, 2)``."""
    ar, ai = _parts(a)
    br, bi = _parts(b)
    ar, ai, br, bi = ar[..., :, :, None], ai[..., :, :, None], br[..., None, :, :], bi[..., None, :, :]
    return _pair((ar * br - ai * bi).sum(-2), (ar * bi + ai * br).sum(-2))


def mul_nd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A B† for real views ``(..., N, N, 2)``: (A B†)_ij = Σ_k A_ik conj(B_jk)."""
    ar, ai = _parts(a)
    br, bi = _parts(b)
    ar, ai, br, bi = ar[..., :, None, :], ai[..., :, None, :], br[..., None, :, :], bi[..., None, :, :]
    return _pair((ar * br + ai * bi).sum(-1), (ai * br - ar * bi).sum(-1))


def mul_dn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A† B for real views ``(..., N, N, 2)``: (A† B)_ij = Σ_k conj(A_ki) B_kj."""
    ar, ai = _parts(a)
    br, bi = _parts(b)
    ar, ai, br, bi = ar[..., :, :, None], ai[..., :, :, None], br[..., :, None, :], bi[..., :, None, :]
    return _pair((ar * br + ai * bi).sum(-3), (ar * bi - ai * br).sum(-3))


def retrace_nd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re tr(A B†) = Σ_ij Re A_ij Re B_ij + Im A_ij Im B_ij for real views; returns ``(...)``."""
    return (a * b).sum((-3, -2, -1))


def staples(v: torch.Tensor) -> torch.Tensor:
    """Staple sums A_μ(x) of ``lattice.wilson.staples`` for the real view ``v (B, D, *L, N, N, 2)``."""
    dim = v.shape[1]
    total: list[torch.Tensor | None] = [None] * dim
    for mu, nu in planes(dim):
        umu, unu = v[:, mu], v[:, nu]
        unu_xmu, umu_xnu = shift(unu, mu), shift(umu, nu)
        a = mul(umu, unu_xmu)      # U_μ(x) U_ν(x+μ)
        b = mul(unu, umu_xnu)      # U_ν(x) U_μ(x+ν)
        for target, up, low in ((mu, mul_nd(unu_xmu, b), shift(mul_dn(a, unu), nu, -1)),
                                (nu, mul_nd(umu_xnu, a), shift(mul_dn(b, umu), mu, -1))):
            term = up + low
            total[target] = term if total[target] is None else total[target] + term
    return torch.stack(total, dim=1)


def project_algebra(w: torch.Tensor) -> torch.Tensor:
    """Π(W) = (W − W†)/2 − tr(W − W†)/(2N) · 1 for the real view ``(..., N, N, 2)``."""
    wr, wi = _parts(w)
    n = w.shape[-2]
    re = 0.5 * (wr - wr.transpose(-1, -2))
    im = 0.5 * (wi + wi.transpose(-1, -2))
    eye = torch.eye(n, dtype=w.dtype, device=w.device)
    im = im - (im.diagonal(dim1=-2, dim2=-1).sum(-1) / n)[..., None, None] * eye
    return _pair(re, im)


def force(v: torch.Tensor, beta: float, n: int) -> torch.Tensor:
    """Wilson force (β/2N) Π(U A) of ``lattice.wilson.SUN.force`` for the real view ``v``; real view out."""
    return (beta / (2 * n)) * project_algebra(mul(v, staples(v)))


def action(v: torch.Tensor, beta: float, n: int) -> torch.Tensor:
    """S = −(β/N) Σ_P Re tr U_P for the real view ``v (B, D, *L, N, N, 2)``; returns ``(B,)``."""
    dim, total = v.shape[1], None
    for mu, nu in planes(dim):
        umu, unu = v[:, mu], v[:, nu]
        term = retrace_nd(mul(umu, shift(unu, mu)), mul(unu, shift(umu, nu))).flatten(1).sum(1)
        total = term if total is None else total + term
    return -(beta / n) * total

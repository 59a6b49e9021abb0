"""SU(N) Wilson gauge theory on a periodic hypercubic lattice in D dimensions.

    S[U] = −(β/N) Σ_x Σ_{μ<ν} Re tr U_μν(x),
    U_μν(x) = U_μ(x) U_ν(x+μ) U_μ(x+ν)† U_ν(x)†.

Links are complex matrices of shape ``(B, D, *L, N, N)``; ``U[:, mu]`` holds U_μ(x). The link U_μ(x)
appears in 2(D−1) plaquettes, whose sum is Re tr(U_μ(x) A_μ(x)) with the staple sum

    A_μ(x) = Σ_{ν≠μ} [ U_ν(x+μ) U_μ(x+ν)† U_ν(x)†  +  U_ν(x+μ−ν)† U_μ(x−ν)† U_ν(x−ν) ].

Force. Moving a link along the algebra, U_μ(x) → e^{tX} U_μ(x) with X = Σ_a x_a T_a (conventions of
``lattice.sun``), changes the action by dS/dt = Σ_a x_a ∂_a S with

    F_μ(x) = Σ_a (∂_a S) T_a = (β / 2N) Π(U_μ(x) A_μ(x)),

Π the traceless anti-Hermitian projection; equivalently dS/dt = −2 Σ_{x,μ} tr(X_μ(x) F_μ(x)).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch

from lattice.geometry import LatticeShape, shift, validate_shape
from lattice.sun import complex_dtype, dagger, haar, identity, project_algebra, retrace_product, trace


def _link(u: torch.Tensor, mu: int) -> torch.Tensor:
    """Links in direction ``mu``: ``(B, D, *L, N, N) -> (B, *L, N, N)``."""
    return u[:, mu]


def planes(dim: int) -> list[tuple[int, int]]:
    """The D(D−1)/2 lattice planes (μ, ν) with μ < ν, in the order used by ``plaquettes``."""
    return list(itertools.combinations(range(dim), 2))


def plaquettes(u: torch.Tensor) -> torch.Tensor:
    """Plaquette matrices U_μν(x) for μ < ν, shape ``(B, D(D−1)/2, *L, N, N)`` (plane order of ``planes``)."""
    dim = u.shape[1]
    out = []
    for mu, nu in planes(dim):
        umu, unu = _link(u, mu), _link(u, nu)
        out.append((umu @ shift(unu, mu)) @ dagger(unu @ shift(umu, nu)))
    return torch.stack(out, dim=1)


def plaquette_retrace(u: torch.Tensor) -> torch.Tensor:
    """Re tr U_μν(x) for μ < ν, shape ``(B, D(D−1)/2, *L)``, real."""
    dim = u.shape[1]
    out = []
    for mu, nu in planes(dim):
        umu, unu = _link(u, mu), _link(u, nu)
        out.append(retrace_product(umu @ shift(unu, mu), unu @ shift(umu, nu)))
    return torch.stack(out, dim=1)


def staples(u: torch.Tensor) -> torch.Tensor:
    """Staple sums A_μ(x) (module docstring), shape ``(B, D, *L, N, N)``, so that
    Σ_{P ∋ (x,μ)} Re tr U_P = Re tr(U_μ(x) A_μ(x))."""
    dim = u.shape[1]
    total = [torch.zeros_like(_link(u, 0)) for _ in range(dim)]
    for mu, nu in planes(dim):
        umu, unu = _link(u, mu), _link(u, nu)
        unu_xmu, umu_xnu = shift(unu, mu), shift(umu, nu)
        a = umu @ unu_xmu          # U_μ(x) U_ν(x+μ)
        b = unu @ umu_xnu          # U_ν(x) U_μ(x+ν)
        # plane (μ, ν): upper and lower staples of U_μ
        total[mu] = total[mu] + unu_xmu @ dagger(b) + shift(dagger(a) @ unu, nu, -1)
        # the same plane seen from U_ν: U_ν(x) A_ν ∋ U_μ(x+ν) U_ν(x+μ)† U_μ(x)† and its lower partner
        total[nu] = total[nu] + umu_xnu @ dagger(a) + shift(dagger(b) @ umu, mu, -1)
    return torch.stack(total, dim=1)


def gauge_transform(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """U_μ(x) → g(x) U_μ(x) g(x+μ)† for gauge matrices ``g`` of shape ``(B, *L, N, N)``."""
    dim = u.shape[1]
    return torch.stack([g @ _link(u, mu) @ dagger(shift(g, mu)) for mu in range(dim)], dim=1)


def polyakov_loop(u: torch.Tensor, direction: int = 0) -> torch.Tensor:
    """Spatially averaged traced Polyakov loop (1/V_s) Σ_x tr Π_t U_d(t, x) / N along ``direction`` d,
    complex, shape ``(B,)``."""
    ud = _link(u, direction)
    axis = 1 + direction
    loop = ud.select(axis, 0)
    for t in range(1, ud.shape[axis]):
        loop = loop @ ud.select(axis, t)
    n = u.shape[-1]
    return (trace(loop) / n).flatten(1).mean(1)


@dataclass(frozen=True)
class SUN(LatticeShape):
    """SU(N) Wilson gauge theory on a periodic lattice of extents ``shape`` (D = len(shape) ≥ 2)."""

    shape: tuple[int, ...]
    beta: float
    N: int = 3
    name: str = "sun"
    manifold: ClassVar[str] = "sun"  # links are group elements: HMC moves them by exp(εP)U

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", validate_shape(self.shape))
        if len(self.shape) < 2:
            raise ValueError(f"a gauge theory needs D >= 2 dimensions, got shape {self.shape}")
        if int(self.N) != self.N or self.N < 2:
            raise ValueError(f"N = {self.N} must be an integer >= 2")
        object.__setattr__(self, "N", int(self.N))

    @property
    def field_shape(self) -> tuple[int, ...]:
        """Shape of one configuration, ``(D, *L, N, N)``."""
        return (self.dim, *self.shape, self.N, self.N)

    @property
    def n_plaquettes(self) -> int:
        return self.volume * self.dim * (self.dim - 1) // 2

    def params(self) -> dict:
        """JSON-ready description: ``{"name": "sun", "shape": [...], "beta": ..., "N": ...}``."""
        return {"name": self.name, "shape": list(self.shape), "beta": self.beta, "N": self.N}

    def plaquettes(self, u: torch.Tensor) -> torch.Tensor:
        """Plaquette matrices ``(B, D(D−1)/2, *L, N, N)``."""
        return plaquettes(u)

    def action(self, u: torch.Tensor) -> torch.Tensor:
        """S = −(β/N) Σ_P Re tr U_P for links ``(B, D, *L, N, N)``; returns real ``(B,)``."""
        return -(self.beta / self.N) * plaquette_retrace(u).flatten(1).sum(1)

    def force(self, u: torch.Tensor) -> torch.Tensor:
        """Algebra-valued derivative F = Σ_a (∂_a S) T_a = (β/2N) Π(U A), shape ``(B, D, *L, N, N)``."""
        return (self.beta / (2 * self.N)) * project_algebra(u @ staples(u))

    grad_action = force

    def random_field(self, n: int, generator: torch.Generator, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """Haar-random (β = 0) links ``(n, D, *L, N, N)``; a float dtype maps to its complex partner."""
        return haar((n, self.dim, *self.shape), self.N, generator, complex_dtype(dtype), device)

    def cold_field(self, n: int, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """All links 1, shape ``(n, D, *L, N, N)``."""
        return identity((n, self.dim, *self.shape), self.N, complex_dtype(dtype), device)

    def observables(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-configuration observables, real ``(B,)``: ``plaquette`` = (1/N_P) Σ_P Re tr U_P / N and
        ``polyakov`` = |(1/V_s) Σ_x tr P(x) / N|, the Polyakov loop along direction 0."""
        plaq = plaquette_retrace(u).flatten(1).mean(1) / self.N
        return {"plaquette": plaq, "polyakov": polyakov_loop(u, 0).abs()}

"""Lattice geometry of the SU(N) spectral couplings in D = 2 … 4 (used by ``flows.sun.flow``).

One coupling layer has a direction μ, a second direction ν ≠ μ and an offset o ∈ {0, 1, 2, 3}. It
updates the links U_μ(x) on the *active* sites A = {x : x_ν ≡ o (mod 4)}, all other coordinates
free. The active loop of U_μ(x) is the plaquette

    P_μν(x) = U_μ(x) U_ν(x+μ̂) U_μ(x+ν̂)† U_ν(x)†        (Boyda et al., PRD 103 (2021) 074504),

whose first link is U_μ(x); its other links are U_ν's and U_μ(x+ν̂), and x+ν̂ ∉ A, so each active loop
holds exactly one updated link. A plaquette P_μρ(y) (either orientation) holds U_μ(y) and U_μ(y+ρ̂),
so it is *touched* by the layer iff y ∈ A or y+ρ̂ ∈ A; plaquettes of the planes without μ hold no U_μ
at all. Only untouched (*frozen*) plaquettes feed the conditioner. Hence every updated link moves
through a function of itself and of links the layer leaves alone: the layer is triangular and its
log-det is the sum over the active loops. (Two updated links may share a touched plaquette P_μρ(y),
ρ ≠ ν, when y and y+ρ̂ are both in A; that plaquette is simply neither an active loop nor an input.)
In D = 2 this is the row pattern of Kanwar et al. (2020): active rows o, passive rows o − 1, frozen
rows o + 1, o + 2 along ν.

Schedule. Layer i updates μ = i mod D with offset ``order[k mod 4]``, k = i // D, in the plane
ν = μ + 1 + (k // 4 mod (D − 1)) (mod D): every 4D consecutive layers update every link once, and
later passes rotate the plane. For D = 2 this is μ = i mod 2, ν = 1 − μ, offset (i // 2) mod 4.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from lattice.sun import dagger

STRIDE = 4  # rows per period of the mask pattern along ν: active, frozen, frozen, passive


def offset_cycle(order: str, stride: int = STRIDE) -> tuple[int, ...]:
    """The row offsets of one cycle of layers: increasing (0, 1, …, s − 1) or decreasing
    (0, s − 1, …, 1), in which each layer but the last finds its passive rows o − 1 unshaped."""
    if order not in ("increasing", "decreasing"):
        raise ValueError(f"offset order {order!r}: expected one of ['decreasing', 'increasing']")
    return tuple(range(stride)) if order == "increasing" else (0, *range(stride - 1, 0, -1))


OFFSET_ORDERS = {order: offset_cycle(order) for order in ("increasing", "decreasing")}  # period 4


def planes(dim: int) -> list[tuple[int, int]]:
    """The D(D−1)/2 planes (a, b), a < b, in ``lattice.wilson.planes`` order."""
    return list(itertools.combinations(range(dim), 2))


def plaquette_matrices(u: torch.Tensor) -> torch.Tensor:
    """P_ab(x) = U_a(x) U_b(x+â) U_a(x+b̂)† U_b(x)† for every plane a < b, multiplied left to right,
    of links ``u (B, D, *L, N, N)``; returns ``(B, D(D−1)/2, *L, N, N)``."""
    dim = u.shape[1]
    out = []
    for a, b in planes(dim):
        ua, ub = u[:, a], u[:, b]
        out.append(ua @ torch.roll(ub, -1, dims=1 + a) @ dagger(torch.roll(ua, -1, dims=1 + b)) @ dagger(ub))
    return torch.stack(out, dim=1)


def oriented_plaquette(p: torch.Tensor, mu: int, nu: int) -> torch.Tensor:
    """P_μν ``(B, *L, N, N)`` from ``p = plaquette_matrices(u)`` ``(B, n_planes, *L, N, N)``: P_μν for
    μ < ν, P_νμ† otherwise."""
    dim = p.dim() - 4
    a, b = min(mu, nu), max(mu, nu)
    loop = p[:, planes(dim).index((a, b))]
    return loop if mu < nu else dagger(loop)


def layer_masks(shape: Sequence[int], mu: int, nu: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of one layer: ``active (*L)`` (x_ν ≡ offset mod 4) and ``frozen (n_planes, *L)``
    (plaquettes that hold no updated link, module docstring). Extents ≡ 1 (mod 4) along ν put two
    active rows next to each other and raise ``ValueError``."""
    shape = tuple(int(s) for s in shape)
    dim = len(shape)
    if not (0 <= mu < dim and 0 <= nu < dim and mu != nu):
        raise ValueError(f"directions mu = {mu}, nu = {nu} are not two distinct axes of a {dim}D lattice")
    extent = shape[nu]
    rows = torch.arange(extent) % STRIDE == offset
    if torch.any(rows & torch.roll(rows, -1)):
        raise ValueError(f"extent {extent} along direction {nu} puts two updated rows next to each other; "
                         f"use extents that are not ≡ 1 mod {STRIDE}")
    view = [1] * dim
    view[nu] = extent
    active = rows.reshape(view).expand(*shape)
    frozen = []
    for a, b in planes(dim):
        if mu not in (a, b):
            frozen.append(torch.ones(shape, dtype=torch.bool))
            continue
        rho = b if mu == a else a
        frozen.append(~(active | torch.roll(active, -1, dims=rho)))
    return active, torch.stack(frozen)


def layer_schedule(dim: int, n_layers: int, order: str = "increasing") -> list[tuple[int, int, int]]:
    """(μ, ν, offset) of layers 0 … n_layers − 1 (module docstring); ``order`` names the offset cycle
    (``OFFSET_ORDERS``)."""
    cycle = offset_cycle(order)
    schedule = []
    for i in range(n_layers):
        mu, k = i % dim, i // dim
        nu = (mu + 1 + (k // STRIDE) % (dim - 1)) % dim
        schedule.append((mu, nu, cycle[k % STRIDE]))
    return schedule

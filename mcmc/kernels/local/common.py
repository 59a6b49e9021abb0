"""Local-update baselines (``sampler.kind: local``): numba sweeps behind the kernel protocol.

* φ⁴: multi-hit Metropolis, site by site in checkerboard order, optionally followed by Wolff single-cluster
  flips of the embedded Ising signs (``local: {cluster: wolff}``) (``mcmc.kernels.local.phi4``);
* U(1): exact von Mises heatbath of each link in its staple plus overrelaxation (``mcmc.kernels.local.u1``);
* SU(N): Cabibbo–Marinari heatbath over the N(N−1)/2 SU(2) subgroups plus overrelaxation
  (``mcmc.kernels.local.sun``).

One kernel ``step`` is one sweep over the lattice (φ⁴), or one heatbath sweep followed by
``n_overrelax`` overrelaxation sweeps (gauge theories). The chains' ``logp = −S`` is recomputed from the
updated field by the theory's own ``action``. Every kernel is a ``LocalKernel`` (lattice check, cached
neighbour table and visiting order, ``init``); the gauge kernels are ``LocalGaugeKernel``s, which add
``n_overrelax``, ``overrelax`` and ``step`` around their own numba ``sweeps``.

Randomness. Each step draws one 64-bit key per chain from the ``torch.Generator`` it is given; inside
numba every chain runs its own SplitMix64 stream (Steele, Lea, Flood, OOPSLA 2014) started at that key.
The chains are therefore a deterministic function of the generator state (resume is bit-identical),
rejection loops may draw as many uniforms as they need, and numba's global ``np.random`` is never used.

The local kernels run on the CPU only: fields go torch → numpy (float64 or complex128) → numba → torch.
A field on another device raises ``LocalKernelError``; set ``device: cpu`` in the run card.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numba
import numpy as np
import torch

from lattice.theories import Theory
from mcmc.kernels.protocol import ChainState, StepInfo, nan_like

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_M53 = 2.0**-53


class LocalKernelError(RuntimeError):
    """A local-update kernel asked to do something it cannot (a CUDA field, an unsupported lattice)."""


@numba.njit(cache=True, error_model="numpy")
def uniform(rng: np.ndarray, b: int) -> float:
    """Next uniform in the open interval (0, 1) of chain ``b``'s SplitMix64 stream ``rng[b]`` (uint64).

    z = s + γ (γ = 0x9E3779B97F4A7C15), mixed as z ← (z ⊕ z≫30)·M₁, z ← (z ⊕ z≫27)·M₂, z ⊕ z≫31;
    u = (⌊z / 2¹¹⌋ + ½) · 2⁻⁵³.
    """
    s = rng[b] + _GOLDEN
    rng[b] = s
    z = (s ^ (s >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return (float(z >> _S11) + 0.5) * _TWO_M53


def chain_keys(n_chains: int, generator: torch.Generator) -> np.ndarray:
    """One 63-bit starting key per chain, ``(B,)`` uint64, drawn from ``generator`` (B int64 draws)."""
    keys = torch.randint(0, 2**63 - 1, (n_chains,), generator=generator, dtype=torch.int64,
                         device=generator.device)
    return keys.cpu().numpy().astype(np.uint64)


def neighbours(shape: tuple[int, ...]) -> np.ndarray:
    """Periodic neighbour table ``(V, D, 2)`` int64 of row-major site indices: ``[x, μ, 0]`` is x+μ̂ and
    ``[x, μ, 1]`` is x−μ̂ (the flattening of ``torch.reshape`` on the lattice axes)."""
    coords = np.indices(shape).reshape(len(shape), -1)
    table = np.empty((coords.shape[1], len(shape), 2), dtype=np.int64)
    for mu, extent in enumerate(shape):
        for side, step in enumerate((1, -1)):
            moved = coords.copy()
            moved[mu] = (moved[mu] + step) % extent
            table[:, mu, side] = np.ravel_multi_index(tuple(moved), shape)
    return table


def checkerboard_order(shape: tuple[int, ...]) -> np.ndarray:
    """Site indices ``(V,)`` int64: the even sites (Σ_μ x_μ even), then the odd ones, each row-major."""
    parity = np.indices(shape).sum(0).reshape(-1) % 2
    return np.concatenate([np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)]).astype(np.int64)


def link_visits(dim: int, order: np.ndarray, n_heatbath: int, n_overrelax: int) -> np.ndarray:
    """The link updates of one chain's sweeps, in the order the gauge kernels make them: rows
    ``(heat, μ, x)``, shape ``(S·D·V, 3)`` int64 for S = ``n_heatbath + n_overrelax`` sweeps. Each sweep
    visits the directions μ = 0 … D−1 in turn, each over the sites in ``order (V,)``; ``heat`` is 1 in the
    first ``n_heatbath`` sweeps (heatbath) and 0 after them (overrelaxation)."""
    n_sweeps = n_heatbath + n_overrelax
    heat = np.repeat(np.arange(n_sweeps) < n_heatbath, dim * len(order))
    mu = np.tile(np.repeat(np.arange(dim), len(order)), n_sweeps)
    x = np.tile(order, dim * n_sweeps)
    return np.stack([heat, mu, x], axis=1).astype(np.int64)


def check_lattice(shape: tuple[int, ...]) -> None:
    """Local updates need every extent ≥ 2: with extent 1 a site (or link) is its own neighbour and the
    site-local action (or staple) no longer describes the change of S."""
    if min(shape) < 2:
        raise LocalKernelError(f"local updates need every lattice extent >= 2, got shape {tuple(shape)}")


def check_cpu(x: torch.Tensor) -> None:
    """Raise ``LocalKernelError`` unless ``x`` lives on the CPU."""
    if x.device.type != "cpu":
        raise LocalKernelError(f"local update kernels run on the CPU only (numba); the field is on "
                               f"{x.device}. Set device: cpu in the run card")


def step_info(accept_rate: np.ndarray) -> StepInfo:
    """StepInfo of a sweep from the per-chain mean acceptance ``(B,)``: ``accept_prob`` is that rate,
    ``accepted`` is ``rate > 0``; there is no energy violation and no proposal density (NaN)."""
    rate = torch.from_numpy(np.ascontiguousarray(accept_rate, dtype=np.float64))
    nan = nan_like(rate)
    return StepInfo(accepted=rate > 0, accept_prob=rate, dH=nan, logq=nan.clone(), proposal_logw=nan.clone())


@dataclass(frozen=True)
class LocalKernel:
    """What every local-update kernel shares: a ``theory`` whose lattice extents are all ≥ 2 (checked at
    construction), its cached neighbour table and visiting order, and ``init``. A subclass adds its sweep
    and ``step``."""

    theory: Theory

    def __post_init__(self) -> None:
        check_lattice(self.theory.shape)

    @cached_property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour table ``(V, D, 2)`` and checkerboard visiting order ``(V,)``."""
        return neighbours(self.theory.shape), checkerboard_order(self.theory.shape)

    def _logp(self, x: torch.Tensor) -> torch.Tensor:
        """``−S(x)`` per chain, ``(B,)`` float64."""
        return -self.theory.action(x).to(torch.float64)

    def init(self, x: torch.Tensor) -> ChainState:
        """State of B chains at ``x`` of shape ``(B, *field_shape)``."""
        check_cpu(x)
        return ChainState(x=x, logp=self._logp(x))


@dataclass(frozen=True)
class LocalGaugeKernel(LocalKernel):
    """Heatbath + overrelaxation scaffolding of the gauge kernels (``LocalU1``, ``LocalSUN``): one ``step``
    is one heatbath sweep followed by ``n_overrelax`` overrelaxation sweeps. Heatbath always moves, so
    ``StepInfo.accept_prob`` is 1. A subclass implements ``sweeps``."""

    n_overrelax: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_overrelax < 0:
            raise ValueError(f"n_overrelax = {self.n_overrelax} must be >= 0")

    def sweeps(self, x: torch.Tensor, generator: torch.Generator | None, n_heatbath: int = 1,
               n_overrelax: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Run ``n_heatbath`` heatbath then ``n_overrelax`` (``None``: the kernel's setting) overrelaxation
        sweeps from links ``x``; returns the new links and the change of S ``(B,)``."""
        raise NotImplementedError

    def _run_sweeps(self, compiled: Any, field: np.ndarray, generator: torch.Generator | None,
                    n_heatbath: int, n_overrelax: int | None) -> np.ndarray:
        """Run the numba sweeps ``compiled(field, nbr, visits, rng, beta)`` in place on
        ``field (B, D, V, ...)`` (``visits``: the link updates of ``link_visits``), with fresh chain keys
        from ``generator`` when there is a heatbath sweep (zeros otherwise); returns the change of S
        ``(B,)``."""
        n_chains = field.shape[0]
        rng = chain_keys(n_chains, generator) if n_heatbath > 0 else np.zeros(n_chains, dtype=np.uint64)
        n_or = self.n_overrelax if n_overrelax is None else n_overrelax
        visits = self._visits(field.shape[1], n_heatbath, n_or)
        return compiled(field, self.tables[0], visits, rng, float(self.theory.beta))

    @cached_property
    def _visit_tables(self) -> dict[tuple[int, int, int], np.ndarray]:
        return {}

    def _visits(self, dim: int, n_heatbath: int, n_overrelax: int) -> np.ndarray:
        """``link_visits`` of this lattice, made once per (D, n_heatbath, n_overrelax): every step uses the
        same order, and building it costs several percent of a step on large lattices."""
        key = (dim, n_heatbath, n_overrelax)
        if key not in self._visit_tables:
            self._visit_tables[key] = link_visits(dim, self.tables[1], n_heatbath, n_overrelax)
        return self._visit_tables[key]

    def overrelax(self, x: torch.Tensor) -> torch.Tensor:
        """One deterministic overrelaxation sweep of links ``x``; S is unchanged."""
        return self.sweeps(x, None, n_heatbath=0, n_overrelax=1)[0]

    def step(self, state: ChainState, generator: torch.Generator) -> tuple[ChainState, StepInfo]:
        """One heatbath sweep and ``n_overrelax`` overrelaxation sweeps of every chain."""
        x, _ = self.sweeps(state.x, generator)
        return ChainState(x=x, logp=self._logp(x)), step_info(np.ones(x.shape[0]))

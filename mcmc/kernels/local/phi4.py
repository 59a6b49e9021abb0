"""Multi-hit Metropolis for φ⁴, compiled with numba (Metropolis et al., J. Chem. Phys. 21 (1953) 1087).

With its neighbours held fixed, the part of S (convention of ``lattice.scalar``) that depends on φ_x is

    s_x(φ) = (2D + m²) φ² + λ φ⁴ − 2 φ n_x,     n_x = Σ_μ (φ_{x+μ} + φ_{x−μ}),

so a proposal φ_x → φ' = φ_x + δ(2u − 1), u ~ U(0, 1), is accepted with probability
min(1, e^{−(s_x(φ') − s_x(φ_x))}). Each site gets ``n_hits`` such hits in a row; the sites are visited one
at a time, the even sublattice first, then the odd one. Every hit satisfies detailed balance with respect
to e^{−S}, so the sweep leaves e^{−S} invariant.

``WolffPhi4`` adds single-cluster updates of the embedded Ising signs (Brower and Tamayo, PRL 62 (1989)
1087; Wolff, PRL 62 (1989) 361). Writing φ_x = s_x |φ_x| with s_x = ±1, the hopping term of S is
−2 Σ_{x,μ} φ_x φ_{x+μ} = −Σ_⟨xy⟩ J_xy s_x s_y with J_xy = 2 |φ_x φ_y|, and every other term is even in s.
With |φ| held fixed the signs are an Ising model with bond couplings J_xy, so a Wolff cluster — grown from
a uniformly chosen site over the bonds ⟨xy⟩ with s_x = s_y, each added with probability
1 − e^{−2 J_xy} = 1 − e^{−4 φ_x φ_y}, and then flipped (φ → −φ on the cluster) — is always accepted and
leaves e^{−S} invariant. The clusters change only signs; the Metropolis sweeps make the chain ergodic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from lattice.scalar import Phi4
from mcmc.kernels.local.common import (
    LocalKernel,
    chain_keys,
    check_cpu,
    step_info,
    uniform,
)
from mcmc.kernels.protocol import ChainState, StepInfo


@numba.njit(cache=True, error_model="numpy")
def metropolis_sweep(phi: np.ndarray, nbr: np.ndarray, order: np.ndarray, rng: np.ndarray, n_hits: int,
                     delta: float, quad: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """One multi-hit sweep of B chains, in place on ``phi (B, V)`` float64.

    ``nbr (V, D, 2)`` neighbour table, ``order (V,)`` visiting order, ``rng (B,)`` SplitMix64 states,
    ``quad`` = 2D + m². Returns the per-chain acceptance rate ``(B,)`` and the change of S ``(B,)``.
    """
    n_chains, n_sites = phi.shape
    dim = nbr.shape[1]
    rate = np.zeros(n_chains)
    d_action = np.zeros(n_chains)
    for b in range(n_chains):
        accepted = 0
        for x in order:
            near = 0.0
            for mu in range(dim):
                near += phi[b, nbr[x, mu, 0]] + phi[b, nbr[x, mu, 1]]
            old = phi[b, x]
            old2 = old * old
            local_old = quad * old2 + lam * old2 * old2 - 2.0 * near * old
            for _ in range(n_hits):
                new = old + delta * (2.0 * uniform(rng, b) - 1.0)
                new2 = new * new
                local_new = quad * new2 + lam * new2 * new2 - 2.0 * near * new
                change = local_new - local_old
                if change <= 0.0 or uniform(rng, b) < np.exp(-change):
                    d_action[b] += change
                    old, local_old = new, local_new
                    accepted += 1
            phi[b, x] = old
        rate[b] = accepted / (n_sites * n_hits)
    return rate, d_action


@numba.njit(cache=True, error_model="numpy")
def wolff_clusters(phi: np.ndarray, nbr: np.ndarray, rng: np.ndarray,
                   n_clusters: int) -> np.ndarray:
    """``n_clusters`` Wolff single-cluster flips of the embedded signs of each of B chains, in place on
    ``phi (B, V)`` float64 (module docstring). ``nbr (V, D, 2)`` neighbour table, ``rng (B,)`` SplitMix64
    states. A bond ⟨xy⟩ listed twice (extent 2: x+μ = x−μ) is tried twice, as its coupling is doubled.
    Returns the mean cluster size per chain ``(B,)``, in sites."""
    n_chains, n_sites = phi.shape
    dim = nbr.shape[1]
    in_cluster = np.zeros(n_sites, dtype=np.bool_)
    members = np.empty(n_sites, dtype=np.int64)
    mean_size = np.zeros(n_chains)
    for b in range(n_chains):
        for _ in range(n_clusters):
            start = min(int(uniform(rng, b) * n_sites), n_sites - 1)
            in_cluster[start] = True
            members[0] = start
            size, done = 1, 0
            while done < size:  # members[done:size] are in the cluster but not yet grown from
                x = members[done]
                done += 1
                here = phi[b, x]
                for mu in range(dim):
                    for side in range(2):
                        y = nbr[x, mu, side]
                        if in_cluster[y]:
                            continue
                        product = here * phi[b, y]
                        if product > 0.0 and uniform(rng, b) < 1.0 - np.exp(-4.0 * product):
                            in_cluster[y] = True
                            members[size] = y
                            size += 1
            for i in range(size):
                phi[b, members[i]] = -phi[b, members[i]]
                in_cluster[members[i]] = False
            mean_size[b] += size / n_clusters
    return mean_size


def default_step_size(theory: Phi4) -> float:
    """δ = 2.5 σ with σ = (2(2D + |m²|))^{−1/2}, the width of the site-local Gaussian e^{−(2D+|m²|) φ²}."""
    return 2.5 / np.sqrt(2.0 * (2 * theory.dim + abs(theory.m2)))


@dataclass(frozen=True)
class LocalPhi4(LocalKernel):
    """Multi-hit checkerboard Metropolis kernel for ``Phi4`` fields ``(B, *L)`` (CPU only).

    One ``step`` is one sweep: every site gets ``n_hits`` hits of half-width ``step_size`` (``None``:
    ``default_step_size``). ``StepInfo.accept_prob`` is each chain's fraction of accepted hits.
    """

    theory: Phi4
    n_hits: int = 3
    step_size: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_hits < 1:
            raise ValueError(f"n_hits = {self.n_hits} must be >= 1")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size = {self.step_size} must be positive")

    @property
    def delta(self) -> float:
        """The proposal half-width δ actually used."""
        return default_step_size(self.theory) if self.step_size is None else float(self.step_size)

    def sweep(self, x: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """One sweep from ``x (B, *L)``: returns the new field (same dtype), the acceptance rate ``(B,)`` and
        the change of S ``(B,)`` summed over the accepted hits (float64 numpy arrays)."""
        check_cpu(x)
        n_chains = x.shape[0]
        phi = x.detach().to(torch.float64).reshape(n_chains, -1).numpy().copy()
        rng = chain_keys(n_chains, generator)
        quad = 2.0 * self.theory.dim + self.theory.m2
        rate, d_action = metropolis_sweep(phi, *self.tables, rng, self.n_hits, self.delta, quad,
                                          float(self.theory.lam))
        return torch.from_numpy(phi).reshape(x.shape).to(x.dtype), rate, d_action

    def step(self, state: ChainState, generator: torch.Generator) -> tuple[ChainState, StepInfo]:
        """One sweep of every chain."""
        x, rate, _ = self.sweep(state.x, generator)
        return ChainState(x=x, logp=self._logp(x)), step_info(rate)


@dataclass(frozen=True)
class WolffPhi4(LocalPhi4):
    """Metropolis sweep plus Wolff single-cluster updates for ``Phi4`` fields ``(B, *L)`` (CPU only;
    ``local: {cluster: wolff}``). One ``step`` is one ``LocalPhi4`` sweep followed by ``n_clusters``
    single-cluster flips of the embedded signs (module docstring). ``StepInfo.accept_prob`` is the sweep's
    fraction of accepted hits; cluster flips are always accepted.
    """

    n_clusters: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_clusters < 1:
            raise ValueError(f"n_clusters = {self.n_clusters} must be >= 1")

    def flip_clusters(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """``n_clusters`` cluster flips from ``x (B, *L)``: the new field (same dtype) and the mean cluster
        size per chain ``(B,)`` in sites."""
        check_cpu(x)
        n_chains = x.shape[0]
        phi = x.detach().to(torch.float64).reshape(n_chains, -1).numpy().copy()
        size = wolff_clusters(phi, self.tables[0], chain_keys(n_chains, generator), self.n_clusters)
        return torch.from_numpy(phi).reshape(x.shape).to(x.dtype), size

    def step(self, state: ChainState, generator: torch.Generator) -> tuple[ChainState, StepInfo]:
        """One Metropolis sweep, then ``n_clusters`` cluster flips, of every chain."""
        x, rate, _ = self.sweep(state.x, generator)
        x, _ = self.flip_clusters(x, generator)
        return ChainState(x=x, logp=self._logp(x)), step_info(rate)

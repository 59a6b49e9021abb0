"""Multi-hit Metropolis for φ⁴, compiled with numba (Metropolis et al., J. Chem. Phys. 21 (1953) 1087).

With its neighbours held fixed, the part of S (convention of ``lattice.scalar``) that depends on φ_x is

    s_x(φ) = (2D + m²) φ² + λ φ⁴ − 2 φ n_x,     n_x = Σ_μ (φ_{x+μ} + φ_{x−μ}),

so a proposal φ_x → φ' = φ_x + δ(2u − 1), u ~ U(0, 1), is accepted with probability
min(1, e^{−(s_x(φ') − s_x(φ_x))}). Each site gets ``n_hits`` such hits in a row; the sites are visited one
at a time, the even sublattice first, then the odd one. Every hit satisfies detailed balance with respect
to e^{−S}, so the sweep leaves e^{−S} invariant.
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

"""Batched Hybrid Monte Carlo (Duane, Kennedy, Pendleton, Roweth, PLB 195 (1987) 216).

One step of B chains: draw p ~ e^{−K}, integrate H = K(p) + S(x) for time τ with ``n_steps``
reversible steps, and accept with probability min(1, e^{−ΔH}). Every chain uses the same τ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mcmc.kernels.integrators import SCHEMES, Dynamics, flat_dynamics, integrate
from mcmc.kernels.protocol import ChainState, StepInfo, metropolis_accept, nan_like, select


def dynamics_for(theory: object) -> Dynamics:
    """The HMC dynamics of a theory: Lie-group dynamics for SU(N) links, flat dynamics on ∂S otherwise
    (real fields, and U(1) link angles, on which S is periodic)."""
    if getattr(theory, "name", None) == "sun":
        from mcmc.kernels.lie import sun_dynamics

        return sun_dynamics(theory)
    return flat_dynamics(theory.grad_action)


@dataclass(frozen=True)
class HMC:
    """HMC kernel for any theory with ``action(x) -> (B,)`` and an analytic ``grad_action``.

    ``tau`` is the trajectory length, ``n_steps`` the number of integrator steps (ε = τ / n_steps).
    """

    theory: object
    tau: float = 1.0
    n_steps: int = 10
    integrator: str = "omelyan"

    def __post_init__(self) -> None:
        if self.integrator not in SCHEMES:
            raise ValueError(f"unknown integrator {self.integrator!r}; accepted: {', '.join(SCHEMES)}")
        if self.n_steps < 1 or self.tau <= 0:
            raise ValueError(f"need tau > 0 and n_steps >= 1, got tau={self.tau}, n_steps={self.n_steps}")

    @property
    def eps(self) -> float:
        return self.tau / self.n_steps

    def init(self, x: torch.Tensor) -> ChainState:
        """State of B chains at ``x`` of shape ``(B, *field_shape)``."""
        return ChainState(x=x, logp=-self.theory.action(x).to(torch.float64))

    def trajectory(self, x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate from (x, p) for time τ; returns the end point (x', p')."""
        end = integrate(self.integrator, dynamics_for(self.theory), x, p, self.eps, self.n_steps)
        return end.x, end.p

    def step(self, state: ChainState, generator: torch.Generator) -> tuple[ChainState, StepInfo]:
        """One HMC trajectory plus Metropolis test for every chain."""
        dyn = dynamics_for(self.theory)
        p = dyn.momentum(state.x, generator)
        h_old = dyn.kinetic(p).to(torch.float64) - state.logp
        x_new, p_new = self.trajectory(state.x, p)
        logp_new = -self.theory.action(x_new).to(torch.float64)
        dH = dyn.kinetic(p_new).to(torch.float64) - logp_new - h_old
        accepted, accept_prob = metropolis_accept(-dH, generator)
        new_state = ChainState(
            x=select(accepted, x_new, state.x), logp=torch.where(accepted, logp_new, state.logp)
        )
        info = StepInfo(
            accepted=accepted,
            accept_prob=accept_prob,
            dH=dH,
            logq=nan_like(dH),
            proposal_logw=nan_like(dH),
        )
        return new_state, info

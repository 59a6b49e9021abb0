"""Batched Hybrid Monte Carlo (Duane, Kennedy, Pendleton, Roweth, PLB 195 (1987) 216).

One step of B chains: draw p ~ e^{−K}, integrate H = K(p) + S(x) for time τ with ``n_steps``
reversible steps, and accept with probability min(1, e^{−ΔH}). Every chain uses the same τ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lattice.theories import Theory
from mcmc.kernels.integrators import SCHEMES, Dynamics, Trajectory, flat_dynamics, integrate
from mcmc.kernels.lie import sun_dynamics
from mcmc.kernels.protocol import ChainState, StepInfo, metropolis_accept, nan_like, select

MANIFOLDS: dict[str, Callable[[Theory], Dynamics]] = {
    "flat": lambda theory: flat_dynamics(theory.grad_action),
    "sun": sun_dynamics,
}


def dynamics_for(theory: Theory) -> Dynamics:
    """The HMC dynamics of a theory, by its ``manifold`` (default "flat"): flat dynamics on ∂S for real
    fields and for angles, on which S is periodic; Lie-group dynamics on ``theory.force`` for SU(N)."""
    manifold = getattr(theory, "manifold", "flat")
    if manifold not in MANIFOLDS:
        raise ValueError(f"HMC has no dynamics for manifold {manifold!r}; accepted: {', '.join(MANIFOLDS)}")
    return MANIFOLDS[manifold](theory)


@dataclass(frozen=True)
class HMCState(ChainState):
    """State of B HMC chains: ``x``, ``logp`` and ``grad`` = ∂S/∂x at x (the force, same shape as x, an
    algebra element for SU(N)), kept so that the next trajectory starts without evaluating it again."""

    grad: torch.Tensor


@dataclass(frozen=True)
class HMC:
    """HMC kernel for any theory with ``action(x) -> (B,)`` and an analytic ``grad_action`` (or, on SU(N),
    ``force``).

    ``tau`` is the trajectory length, ``n_steps`` the number of integrator steps (ε = τ / n_steps). A
    trajectory costs n_steps force evaluations for leapfrog and 2 n_steps for Omelyan.
    """

    theory: Theory
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

    def init(self, x: torch.Tensor) -> HMCState:
        """State of B chains at ``x`` of shape ``(B, *field_shape)``."""
        grad = dynamics_for(self.theory).grad(x)
        return HMCState(x=x, logp=-self.theory.action(x).to(torch.float64), grad=grad)

    def trajectory(self, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor | None = None) -> Trajectory:
        """Integrate from (x, p) for time τ (``grad``: the force at x, if known)."""
        return integrate(self.integrator, dynamics_for(self.theory), x, p, self.eps, self.n_steps, grad)

    def step(self, state: HMCState, generator: torch.Generator) -> tuple[HMCState, StepInfo]:
        """One HMC trajectory plus Metropolis test for every chain."""
        dyn = dynamics_for(self.theory)
        p = dyn.momentum(state.x, generator)
        h_old = dyn.kinetic(p).to(torch.float64) - state.logp
        end = self.trajectory(state.x, p, state.grad)
        logp_new = -self.theory.action(end.x).to(torch.float64)
        dH = dyn.kinetic(end.p).to(torch.float64) - logp_new - h_old
        accepted, accept_prob = metropolis_accept(-dH, generator)
        new_state = HMCState(
            x=select(accepted, end.x, state.x),
            logp=torch.where(accepted, logp_new, state.logp),
            grad=select(accepted, end.grad, state.grad),
        )
        info = StepInfo(
            accepted=accepted,
            accept_prob=accept_prob,
            dH=dH,
            logq=nan_like(dH),
            proposal_logw=nan_like(dH),
        )
        return new_state, info

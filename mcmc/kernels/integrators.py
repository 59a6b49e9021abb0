"""Symplectic, reversible integrators for HMC (a small init/update pair in the style of NumPyro).

The Hamiltonian is H(x, p) = K(p) + S(x). A ``Dynamics`` record says how the fields move:

* ``grad``:  x ↦ ∂S/∂x (the negative force), same shape as x (an algebra element on a group manifold);
* ``drift``: (x, p, ε) ↦ the exact flow of K for time ε (x + εp on a flat space, exp(εp)·U on a group);
* ``kinetic``: p ↦ K(p), shape ``(B,)``;
* ``momentum``: (x, generator) ↦ p drawn from e^{−K}.

Schemes (Omelyan, Mryglod, Folk, Comput. Phys. Commun. 151 (2003) 272; Takaishi & de Forcrand 2006):

* leapfrog:  per step  p ← p − ε/2 ∇S;  x ← drift(ε);  p ← p − ε/2 ∇S            (1 force)
* omelyan (2MN, λ = 0.1931833275037836):
            p ← p − λε ∇S; x ← drift(ε/2); p ← p − (1−2λ)ε ∇S; x ← drift(ε/2); p ← p − λε ∇S   (2 forces)

Adjacent half-kicks of consecutive steps are merged, and the force at the starting point is passed in
(HMC keeps it in its state from the previous trajectory), so leapfrog costs n_steps force evaluations
and Omelyan 2 n_steps. Both are time-reversible and volume-preserving, so HMC is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

OMELYAN_LAMBDA = 0.1931833275037836
SCHEMES = ("leapfrog", "omelyan")


class Dynamics(NamedTuple):
    """How fields and momenta of one theory move under H = K(p) + S(x)."""

    grad: Callable[[torch.Tensor], torch.Tensor]
    drift: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    kinetic: Callable[[torch.Tensor], torch.Tensor]
    momentum: Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def flat_dynamics(grad: Callable[[torch.Tensor], torch.Tensor]) -> Dynamics:
    """Dynamics on R^n (or on angles, which are periodic in S): K = ½ Σ p², x ← x + ε p, p ~ N(0, 1)."""

    def drift(x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        return x + eps * p

    def kinetic(p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * p).flatten(1).sum(1)

    def momentum(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    return Dynamics(grad=grad, drift=drift, kinetic=kinetic, momentum=momentum)


class Trajectory(NamedTuple):
    """End point (x, p) of a molecular-dynamics trajectory, the force ∂S/∂x at x (for the next
    trajectory), and the number of force evaluations the trajectory cost."""

    x: torch.Tensor
    p: torch.Tensor
    grad: torch.Tensor
    n_force: int


def leapfrog(
    dyn: Dynamics, x: torch.Tensor, p: torch.Tensor, eps: float, n_steps: int, grad: torch.Tensor
) -> Trajectory:
    """Leapfrog (velocity Verlet) with merged half-kicks from the force ``grad`` at x; n_steps force
    evaluations."""
    p = p - 0.5 * eps * grad
    for i in range(n_steps):
        x = dyn.drift(x, p, eps)
        grad = dyn.grad(x)
        kick = eps if i < n_steps - 1 else 0.5 * eps
        p = p - kick * grad
    return Trajectory(x, p, grad, n_steps)


def omelyan(
    dyn: Dynamics, x: torch.Tensor, p: torch.Tensor, eps: float, n_steps: int, grad: torch.Tensor
) -> Trajectory:
    """Omelyan 2MN integrator with merged outer kicks from the force ``grad`` at x; 2 n_steps force
    evaluations."""
    lam = OMELYAN_LAMBDA
    p = p - lam * eps * grad
    for i in range(n_steps):
        x = dyn.drift(x, p, 0.5 * eps)
        p = p - (1 - 2 * lam) * eps * dyn.grad(x)
        x = dyn.drift(x, p, 0.5 * eps)
        grad = dyn.grad(x)
        kick = 2 * lam * eps if i < n_steps - 1 else lam * eps
        p = p - kick * grad
    return Trajectory(x, p, grad, 2 * n_steps)


def integrate(
    scheme: str,
    dyn: Dynamics,
    x: torch.Tensor,
    p: torch.Tensor,
    eps: float,
    n_steps: int,
    grad: torch.Tensor | None = None,
) -> Trajectory:
    """Run ``n_steps`` steps of size ``eps`` of ``scheme`` ('leapfrog' | 'omelyan') from (x, p);
    ``grad`` is the force ∂S/∂x at x when known (it costs one more evaluation otherwise)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown integrator {scheme!r}; accepted: {', '.join(SCHEMES)}")
    start = dyn.grad(x) if grad is None else grad
    end = (leapfrog if scheme == "leapfrog" else omelyan)(dyn, x, p, eps, n_steps, start)
    return end if grad is not None else end._replace(n_force=end.n_force + 1)

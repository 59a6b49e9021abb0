"""HMC fast path for many chains: a fused molecular-dynamics trajectory (``torch.compile``), replayed as
one CUDA graph per trajectory on GPUs.

* Real fields (φ⁴, U(1) link angles): the whole trajectory ``(x, p) -> (x', p')`` of
  ``mcmc.kernels.integrators.integrate`` is compiled; on CUDA with ``mode="reduce-overhead"``, so that one
  trajectory is one graph replay instead of hundreds of tiny kernel launches.
* SU(N) links: the Wilson force is compiled in its real/imaginary form (``lattice.sun_real``); the
  exponential-map drift stays eager (its small-argument branch needs a host decision).

Momenta, the action at the end points and the Metropolis test run eagerly, exactly as in
``mcmc.kernels.hmc.HMC``, so the chain is the same Markov chain: the compiled trajectory computes the
same reversible, volume-preserving map, and differs from the eager one only by floating-point rounding
(fused kernels may reassociate sums). Where ``torch.compile`` cannot work (no C compiler for the CPU
backend, no Triton on the GPU), :func:`flows.accel.compile_available` says why and the kernel runs
eagerly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flows.accel import compile_available
from lattice import sun_real
from mcmc.kernels.hmc import HMC, dynamics_for
from mcmc.kernels.integrators import Dynamics, Trajectory, flat_dynamics, integrate

log = logging.getLogger("latflow")

FusedTrajectory = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def _real_force(theory: object) -> Callable[[torch.Tensor], torch.Tensor]:
    beta, n = float(theory.beta), int(theory.N)

    def force(v: torch.Tensor) -> torch.Tensor:
        return sun_real.force(v, beta, n)

    return force


def fused_dynamics(theory: object, wrap: Callable[[Callable], Callable]) -> Dynamics:
    """The theory's HMC dynamics with its force replaced by ``wrap(real force)`` for SU(N) links
    (complex in and out through real views); other theories' dynamics unchanged."""
    dyn = dynamics_for(theory)
    if getattr(theory, "manifold", "flat") != "sun":
        return dyn
    real_force = wrap(_real_force(theory))

    def grad(u: torch.Tensor) -> torch.Tensor:
        return torch.view_as_complex(real_force(torch.view_as_real(u.resolve_conj())).contiguous())

    return dyn._replace(grad=grad)


def _wrap_for(device_type: str, compiled: bool, graphs: bool) -> Callable[[Callable], Callable]:
    """Identity, or ``torch.compile``; with ``graphs`` on CUDA in ``reduce-overhead`` mode (CUDA graphs,
    whose outputs the next replay overwrites, so callers copy them out)."""
    if not compiled:
        return lambda fn: fn
    mode = "reduce-overhead" if graphs and device_type == "cuda" else None
    return lambda fn: torch.compile(fn, mode=mode, dynamic=False)


@functools.lru_cache(maxsize=16)
def trajectory_fn(theory: object, scheme: str, eps: float, n_steps: int, device_type: str,
                  compiled: bool = True) -> FusedTrajectory:
    """``(x, p, g) -> (x', p', g')`` for ``n_steps`` steps of size ``eps`` of ``scheme``, from the force g
    at x; g' is the force at x' (kept by the HMC state for the next trajectory).

    ``compiled=False`` returns the same graph-capturable code run eagerly (for tests on machines
    without a compiler). Results are fresh tensors (a CUDA-graph replay's outputs are copied out).
    """
    if getattr(theory, "manifold", "flat") == "sun":
        dyn = fused_dynamics(theory, _wrap_for(device_type, compiled, graphs=False))

        def sun_traj(x: torch.Tensor, p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
            end = integrate(scheme, dyn, x, p, eps, n_steps, g)
            return end.x, end.p, end.grad

        return sun_traj
    dyn = flat_dynamics(theory.grad_action)

    def flat_traj(x: torch.Tensor, p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        end = integrate(scheme, dyn, x, p, eps, n_steps, g)
        return end.x, end.p, end.grad

    fused = _wrap_for(device_type, compiled, graphs=True)(flat_traj)

    def run(x: torch.Tensor, p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if compiled and device_type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new replay; the last outputs were copied out
        return tuple(t.clone() for t in fused(x, p, g))

    return run


@dataclass(frozen=True)
class CompiledHMC(HMC):
    """``mcmc.kernels.hmc.HMC`` with its trajectory fused by ``torch.compile`` (card: ``hmc.compile: true``).

    ``compiled=False`` runs the same fused-form code eagerly. When compilation is unavailable for the
    field's device the plain eager trajectory of ``HMC`` is used and a warning is logged once.
    """

    compiled: bool = True

    def trajectory(self, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor | None = None) -> Trajectory:
        compiled = self.compiled
        if compiled:
            reason = compile_available(x.device)
            if reason is not None:
                _warn_once(reason)
                return super().trajectory(x, p, grad)
        fn = trajectory_fn(self.theory, self.integrator, self.eps, self.n_steps, x.device.type, compiled)
        n_force = self.n_steps * (1 if self.integrator == "leapfrog" else 2)
        if grad is None:
            grad, n_force = dynamics_for(self.theory).grad(x), n_force + 1
        return Trajectory(*fn(x, p, grad), n_force)


@functools.lru_cache(maxsize=8)
def _warn_once(reason: str) -> None:
    log.warning("hmc.compile: %s; running the eager trajectory", reason)

"""HMC dynamics on SU(N)^{links}: momenta in the Lie algebra, links moved by the exponential map.

With the conventions of ``lattice.sun`` (T_a = iλ_a/2, tr T_a T_b = −½ δ_ab), the momentum of a link is
P = Σ_a p_a T_a, traceless anti-Hermitian, and the Hamiltonian is

    H(U, P) = K(P) + S(U),      K = −Σ_links tr P² = ½ Σ_links Σ_a p_a²,

so the momentum density is e^{−K}: p_a ~ N(0, 1). Hamilton's equations are

    dU/dt = P U,      dP/dt = −F(U),      F = Σ_a (∂_a S) T_a   (``SUN.force``),

where ∂_a is the derivative along U → e^{t T_a} U. The exact flow of K is U ← exp(εP) U, which
preserves Haar measure, and the kick P ← P − ε F is a shear of the algebra, so leapfrog and Omelyan
from ``mcmc.kernels.integrators`` stay volume-preserving and time-reversible (P → −P) and HMC is exact.
"""

from __future__ import annotations

import torch

from lattice.sun import expm_su, gaussian_algebra, reunitarize
from lattice.theories import Theory
from mcmc.kernels.integrators import Dynamics


def kinetic_energy(p: torch.Tensor) -> torch.Tensor:
    """K = −Σ tr P² = Σ |P_ij|² summed per configuration, for momenta ``(B, D, *L, N, N)``; real ``(B,)``."""
    return (p.real * p.real + p.imag * p.imag).flatten(1).sum(1)


def sun_drift(u: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
    """U ← exp(ε P) U, link by link; shapes ``(B, D, *L, N, N)``.

    In complex64 the rounding of many products random-walks off the group (|U†U − 1| ≈ 1e-4 after a few
    hundred trajectories), so single-precision links are re-unitarised after each drift; this changes
    them only at the level of their rounding error. complex128 links are left exact (reversible to 1e-15).
    """
    out = expm_su(eps * p) @ u
    return reunitarize(out) if out.dtype == torch.complex64 else out


def sun_momentum(u: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Momenta P = Σ_a p_a T_a, p_a ~ N(0, 1), with the shape, dtype and device of the links ``u``."""
    return gaussian_algebra(u.shape[:-2], u.shape[-1], generator, dtype=u.dtype, device=u.device)


def sun_dynamics(theory: Theory) -> Dynamics:
    """The ``Dynamics`` record of an SU(N) gauge theory (``lattice.wilson.SUN`` or anything with a
    ``force(U)`` returning Σ_a (∂_a S) T_a): grad = force, drift = exp(εP)U, K = −tr P²."""
    return Dynamics(grad=theory.force, drift=sun_drift, kinetic=kinetic_energy, momentum=sun_momentum)

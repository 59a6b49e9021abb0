"""Heatbath and overrelaxation for U(1) Wilson gauge theory, compiled with numba.

Links are angles θ_μ(x), stored ``(B, D, V)`` inside numba (``(B, D, *L)`` outside). Orienting every
plaquette that contains θ_μ(x) so that it starts with that link, its angle is θ_μ(x) + α_P with

    α_up(ν) = θ_ν(x+μ) − θ_μ(x+ν) − θ_ν(x),    α_down(ν) = −θ_ν(x+μ−ν) − θ_μ(x−ν) + θ_ν(x−ν)

for each ν ≠ μ, and the link's local action is −β Σ_P cos(θ + α_P) = −β k cos(θ + ψ), where
k e^{iψ} = Σ_P e^{iα_P} is the staple sum. So:

* heatbath: θ = −ψ + ϑ with ϑ drawn exactly from the von Mises density ∝ e^{βk cos ϑ} on (−π, π]
  (Best & Fisher, Appl. Statist. 28 (1979) 152, a wrapped-Cauchy envelope with acceptance ≥ 0.65);
* overrelaxation: θ → −2ψ − θ, the reflection through the staple direction, which keeps cos(θ + ψ)
  and hence S exactly, is an involution and preserves dθ (Creutz, PRD 36 (1987) 515).

Links are updated one at a time (direction by direction, each over the sites in checkerboard order),
each update with the current values of its neighbours, so every single update satisfies detailed
balance. The overrelaxation sweeps are microcanonical; the heatbath sweep makes the chain ergodic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch

from lattice.u1 import U1
from mcmc.kernels.local.common import (
    LocalGaugeKernel,
    check_cpu,
    uniform,
)

TWO_PI = 2.0 * math.pi
_KAPPA_UNIFORM = 1e-8   # below this concentration the von Mises law is uniform to double precision
_KAPPA_TAYLOR = 1e-5    # below this, the Best–Fisher envelope parameter from its small-κ expansion


@numba.njit(cache=True, error_model="numpy")
def von_mises(kappa: float, rng: np.ndarray, b: int) -> float:
    """One draw in (−π, π] from the density ∝ exp(κ cos ϑ), κ ≥ 0 (Best–Fisher), from chain ``b``'s stream.

    With τ = 1 + sqrt(1 + 4κ²), ρ = (τ − sqrt(2τ)) / (2κ), r = (1 + ρ²) / (2ρ): z = cos(π u₁),
    f = (1 + r z) / (r + z), c = κ (r − f); accept if c(2 − c) > u₂ or log(c / u₂) + 1 ≥ c;
    then ϑ = ± arccos f with the sign from u₃.
    """
    if kappa < _KAPPA_UNIFORM:
        return math.pi * (2.0 * uniform(rng, b) - 1.0)
    if kappa < _KAPPA_TAYLOR:
        r = 1.0 / kappa + kappa
    else:
        tau = 1.0 + math.sqrt(1.0 + 4.0 * kappa * kappa)
        rho = (tau - math.sqrt(2.0 * tau)) / (2.0 * kappa)
        r = (1.0 + rho * rho) / (2.0 * rho)
    while True:
        z = math.cos(math.pi * uniform(rng, b))
        f = (1.0 + r * z) / (r + z)
        c = kappa * (r - f)
        u2 = uniform(rng, b)
        if c * (2.0 - c) > u2 or math.log(c / u2) + 1.0 >= c:
            break
    angle = math.acos(min(1.0, max(-1.0, f)))
    return angle if uniform(rng, b) < 0.5 else -angle


@numba.njit(cache=True, error_model="numpy")
def wrap(angle: float) -> float:
    """The angle mod 2π in [−π, π)."""
    return angle - TWO_PI * math.floor((angle + math.pi) / TWO_PI)


@numba.njit(cache=True, error_model="numpy")
def staple(theta: np.ndarray, nbr: np.ndarray, b: int, mu: int, x: int) -> tuple[float, float]:
    """Staple sum Σ_P e^{iα_P} of link (x, μ) in chain ``b`` of ``theta (B, D, V)``, as (Re, Im)."""
    re, im = 0.0, 0.0
    xp = nbr[x, mu, 0]
    for nu in range(theta.shape[1]):
        if nu == mu:
            continue
        xm = nbr[x, nu, 1]
        up = theta[b, nu, xp] - theta[b, mu, nbr[x, nu, 0]] - theta[b, nu, x]
        down = theta[b, nu, xm] - theta[b, nu, nbr[xp, nu, 1]] - theta[b, mu, xm]
        re += math.cos(up) + math.cos(down)
        im += math.sin(up) + math.sin(down)
    return re, im


@numba.njit(cache=True, error_model="numpy")
def u1_sweeps(theta: np.ndarray, nbr: np.ndarray, visits: np.ndarray, rng: np.ndarray,
              beta: float) -> np.ndarray:
    """The link updates ``visits`` (rows ``(heat, μ, x)`` of ``common.link_visits``: heatbath where heat
    is 1, overrelaxation where it is 0) of every chain, in place on ``theta (B, D, V)`` float64. ``rng (B,)``
    SplitMix64 states (unused by overrelaxation). Returns the change of S per chain ``(B,)``, accumulated
    link by link."""
    n_chains = theta.shape[0]
    d_action = np.zeros(n_chains)
    for b in range(n_chains):
        for i in range(visits.shape[0]):
            heat, mu, x = visits[i, 0] == 1, visits[i, 1], visits[i, 2]
            re, im = staple(theta, nbr, b, mu, x)
            k = math.hypot(re, im)
            psi = math.atan2(im, re)
            old = theta[b, mu, x]
            if heat:
                new = wrap(von_mises(beta * k, rng, b) - psi)
            elif k > 0.0:
                new = wrap(-2.0 * psi - old)
            else:
                continue
            d_action[b] -= beta * k * (math.cos(new + psi) - math.cos(old + psi))
            theta[b, mu, x] = new
    return d_action


@dataclass(frozen=True)
class LocalU1(LocalGaugeKernel):
    """Heatbath + overrelaxation kernel for ``U1`` links ``(B, D, *L)`` (CPU only, any D ≥ 2).

    One ``step`` is one heatbath sweep followed by ``n_overrelax`` overrelaxation sweeps. Heatbath
    always moves, so ``StepInfo.accept_prob`` is 1.
    """

    theory: U1

    def sweeps(self, x: torch.Tensor, generator: torch.Generator | None, n_heatbath: int = 1,
               n_overrelax: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Run sweeps from links ``x (B, D, *L)``; returns the new links (same dtype, angles in [−π, π))
        and the change of S ``(B,)``. ``generator`` may be ``None`` only when ``n_heatbath == 0``
        (pure overrelaxation is deterministic); ``n_overrelax=None`` uses the kernel's setting."""
        check_cpu(x)
        n_chains, dim = x.shape[0], x.shape[1]
        theta = x.detach().to(torch.float64).reshape(n_chains, dim, -1).numpy().copy()
        d_action = self._run_sweeps(u1_sweeps, theta, generator, n_heatbath, n_overrelax)
        return torch.from_numpy(theta).reshape(x.shape).to(x.dtype), d_action

"""The Wilson start of the SU(N) spectral flows (``flows.sun.flow``, ``init = "wilson"``).

Strong-coupling argument. Relative to Haar measure the target is p(U) ∝ Π_P e^{c Re tr P}, c = β/N, so
to first order in c the log-weight of a Haar proposal is c Σ_P Re tr P, with variance c² · n_P / 2
(Var Re tr P = 1/2 under Haar for N ≥ 3; 1 for N = 2). A coupling changes its active loop W → h(W);
if h maps Haar-distributed W to the one-plaquette density

    w_c(W) ∝ e^{c Re tr W}   (with respect to Haar),

the active plaquettes are right to first order. Later layers multiply a shaped plaquette by
M = h(W') W'^{-1} = 1 + O(c) of some other loop, which changes its density only at O(c²). So a flow
in which every plaquette is the active loop of exactly one layer (``shaping_layers``) is exact to
first order in β, before any training: on 4⁴ SU(3) the log-weight variance falls from 5.3 (Haar) to
0.34 at β = 0.25 and from 21 to 1.3 at β = 0.5 (ESS 0.71 and 0.31; ``runs/bench/sun_wilson_start_ess.py``).

The spline. The spectral map moves each stick fraction b_k by its own spline (``flows.spectral``), so
for N = 3 it cannot represent w_c exactly; ``wilson_loop_params`` picks the constant spline
parameters that minimise KL(h_* Haar ‖ w_c · Haar), by deterministic midpoint quadrature of the Haar
density on the stick cube (N − 1 = 1 or 2 dimensions) and L-BFGS. For N = 3 the residual log-weight
variance is about 6 % of c²/2 (``tests/flows/sun/test_starts.py``); for N = 2 the map is exact to
quadrature accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from flows.masks import layer_masks, planes
from flows.nets import CircularConv4d
from flows.spectral import log_haar_density, spectral_map, sticks_to_alcove
from flows.sun.params import n_stick_params, stick_params

GRID_POINTS = {2: 4000, 3: 200}   # midpoints per stick axis: 200² nodes resolve the N = 3 optimum to 1 %
LBFGS_ITERATIONS = 100


def haar_stick_grid(n: int, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint nodes of the stick cube [0, 1]^{N−1} as alcove angles ``(M, N)``, M = points^{N−1},
    and their Haar quadrature weights ``(M,)`` (summing to 1): the Weyl density |Δ(θ)|² times the
    Jacobian of the gaps, ∂g/∂b = Π_k 2π Π_{j<k} (1 − b_j) ∝ Π_k (1 − b_k)^{N−2−k}. float64."""
    mid = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    sticks = torch.stack(torch.meshgrid(*([mid] * (n - 1)), indexing="ij"), dim=-1).reshape(-1, n - 1)
    theta = sticks_to_alcove(sticks)
    powers = torch.arange(n - 2, -1, -1, dtype=torch.float64)
    log_density = log_haar_density(theta) + (powers * torch.log1p(-sticks)).sum(-1)
    return theta, torch.softmax(log_density, dim=0)


def loop_log_weight(theta: torch.Tensor, params: torch.Tensor, coupling: float) -> torch.Tensor:
    """log w_c(h(W)) + log|det ∂h| ``(M,)`` for alcove angles ``theta (M, N)`` moved by one constant
    spline ``params`` (``(N−1, P)`` or, autoregressive, ``(N−1, K, P)``; ``flows.spectral.spectral_map``):
    the log-ratio of target to proposal of one loop, up to a constant."""
    expanded = params.expand(*theta.shape[:-1], *params.shape)
    theta_new, logdet = spectral_map(theta, expanded)
    return coupling * torch.cos(theta_new).sum(-1) + logdet


@functools.lru_cache(maxsize=16)
def _fit(n: int, coupling: float, bins: int, k_basis: int) -> torch.Tensor:
    theta, weight = haar_stick_grid(n, GRID_POINTS[n])
    flat = torch.zeros(n_stick_params(n, bins, k_basis), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([flat], lr=1.0, max_iter=LBFGS_ITERATIONS, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def reverse_kl() -> torch.Tensor:       # KL(h_* Haar ‖ w_c Haar) up to the constant log Z_c
        opt.zero_grad()
        params = stick_params(flat, n, bins, k_basis)
        loss = -(weight * loop_log_weight(theta, params, coupling)).sum()
        loss.backward()
        return loss

    opt.step(reverse_kl)
    return flat.detach()


def wilson_loop_params(n: int, beta: float, bins: int, k_basis: int = 1) -> torch.Tensor:
    """Constant conditioner outputs ``(n_stick_params,)`` (float64; ``(N−1)·(3·bins − 1)`` when
    ``k_basis`` = 1) of the spectral map that best sends a Haar SU(N) loop to the one-plaquette Wilson
    density ∝ e^{(β/N) Re tr W} (module docstring), in the channel order of the couplings
    (``flows.sun.params.stick_params``); N = 2 or 3. Cached per (N, β, bins, K); about 15 CPU seconds for
    N = 3, K = 1."""
    if n not in GRID_POINTS:
        raise ValueError(f"flow.init = 'wilson' is implemented for SU(2) and SU(3), not SU({n}); "
                         f"use init: identity")
    return _fit(int(n), float(beta) / n, int(bins), int(k_basis)).clone()


def shaping_layers(shape: Sequence[int], schedule: Sequence[tuple[int, int, int]]) -> list[bool]:
    """For each layer (μ, ν, offset) of ``schedule``: True if it has active plaquettes, P_μν(x) for
    x_ν ≡ offset (mod 4), and none of them is the active loop of an earlier layer. A plaquette is the
    pair (plane, x), whichever of its two links starts the loop."""
    dim = len(shape)
    shaped = torch.zeros(len(planes(dim)), *shape, dtype=torch.bool)
    first = []
    for mu, nu, offset in schedule:
        active, _ = layer_masks(shape, mu, nu, offset)
        plane = planes(dim).index((min(mu, nu), max(mu, nu)))
        fresh = bool(active.any()) and not bool(shaped[plane][active].any())
        if fresh:
            shaped[plane] |= active
        first.append(fresh)
    return first


def final_bias(net: nn.Module) -> torch.Tensor:
    """The bias of a ``flows.nets.ConvNet``'s last convolution, which is the layer's spline parameters
    while its weights are zero (the 4D convolution keeps its bias in the centre slice)."""
    last = net.net[-1]
    if isinstance(last, CircularConv4d):
        return next(s.bias for s in last.slices if s.bias is not None)
    return last.bias


def start_at_wilson(layers: Sequence[nn.Module], shape: Sequence[int], n: int, beta: float, bins: int,
                    k_basis: int = 1) -> None:
    """Set the final-conv bias of every shaping layer (``shaping_layers``) of the SU(N) couplings
    ``layers`` (with ``mu``, ``nu``, ``offset`` and a zero-weight final conv) to
    ``wilson_loop_params``; the other layers stay the identity. In place."""
    schedule = [(layer.mu, layer.nu, layer.offset) for layer in layers]
    params = wilson_loop_params(n, beta, bins, k_basis)        # in the channel order the coupling reads
    with torch.no_grad():
        for layer, fresh in zip(layers, shaping_layers(shape, schedule), strict=True):
            if fresh:
                bias = final_bias(layer.net)
                bias.copy_(params.to(bias.dtype))

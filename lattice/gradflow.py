"""Wilson gradient flow, the clover energy density and the clover topological charge.

Lüscher, JHEP 08 (2010) 071 [arXiv:1006.4518]. The flow of the links is

    dV_μ(x)/dt = Z_μ(x) V_μ(x),    Z = −g₀² ∂S_w = −Π(V_μ(x) A_μ(x)),

the steepest descent of the Wilson action; with ``lattice.wilson`` conventions this is minus the force
of the Wilson action at β = 2N. It is integrated with the third-order Runge–Kutta scheme of the paper
(appendix C), with Z_i = ε Z(W_i):

    W_1 = exp(¼ Z_0) W_0,   W_2 = exp(8/9 Z_1 − 17/36 Z_0) W_1,   W_3 = exp(¾ Z_2 − 8/9 Z_1 + 17/36 Z_0) W_2.

Step-size control (in the spirit of Fritzsch and Ramos, JHEP 10 (2013) 008, appendix). The same Z_0, Z_1
give an embedded second-order step, W̃ = exp(2 Z_1 − Z_0) W_0: with Z_1 − Z_0 = (ε²/4) dZ/dt + O(ε³),
2 Z_1 − Z_0 = ε Z_0 + (ε²/2) dZ/dt + O(ε³), the Magnus expansion to second order (its commutator term
is O(ε³)). The local error of W̃ is O(ε³), that of W_3 O(ε⁴), so d = max_links ‖W_3 − W̃‖ (Frobenius norm, gauge
invariant) estimates the larger one. A step is accepted when d ≤ tol, and the next step is
ε' = ε min(2, max(0.2, 0.9 (tol/d)^{1/3})) (rejected steps are retried with ε'). The accepted W_3 is
third order, so the global error falls at least like tol (empirically faster).

Clover field strength: Q_μν(x) is the sum of the four plaquettes in the (μ, ν) plane that
start and end at x, all with the orientation μ → ν, and

    G_μν(x) = (1/8) [Q_μν(x) − Q_νμ(x)] = ¼ Π(Q_μν(x)),

where Π also removes the trace (a common choice that differs from the unprojected one only in the
trace part, which vanishes for SU(2)). E(x) = −½ Σ_{μ,ν} tr G_μν G_μν ≥ 0 and, in 4D,

    q(x) = −1/(32π²) ε_μνρσ tr G_μν G_ρσ = −1/(4π²) tr[G_01 G_23 − G_02 G_13 + G_03 G_12],   Q = Σ_x q(x).

Improved field strength (tree-level O(a²) improvement with 1×2 loops, in the spirit of de Forcrand,
García Pérez and Stamatescu, Nucl. Phys. B 499 (1997) 409). Averaged over the four quadrants, the leaves of
an m × n loop with a corner at x measure mn a² [F + (a²/6)(m² D_μ² + n² D_ν²) F + O(a⁴)] (Taylor expansion
about x). For an abelian field varying along μ with wave number k, the 1×1 clover gives F sin(ka)/(ka), and
the average of the 2×1 and 1×2 clovers (each leaf divided by its area 2) gives
F [sin(2ka)/(2ka) + sin(ka)/(ka)]/2. So

    G^imp = (5/3) G^{1×1} − (2/3) G^{1×2},    G^{1×2} = (1/16) Π(Σ of the 8 rectangles with a corner at x),

cancels the a² term: G^imp = F [1 − (ka)⁴/30 + …] against F [1 − (ka)²/6 + …] for the clover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lattice.geometry import shift
from lattice.sun import dagger, expm_su, project_algebra, trace
from lattice.wilson import planes, plaquette_retrace, staples


def flow_generator(v: torch.Tensor) -> torch.Tensor:
    """Z(V) = −Π(V A), the Wilson-flow velocity of links ``(B, D, *L, N, N)`` (algebra valued)."""
    return -project_algebra(v @ staples(v))


def rk3_step(v: torch.Tensor, eps: float) -> torch.Tensor:
    """One step of Lüscher's third-order Runge–Kutta integrator (appendix C) of size ``eps``."""
    z0 = eps * flow_generator(v)
    w1 = expm_su(0.25 * z0) @ v
    z1 = eps * flow_generator(w1)
    w2 = expm_su((8.0 / 9.0) * z1 - (17.0 / 36.0) * z0) @ w1
    z2 = eps * flow_generator(w2)
    return expm_su(0.75 * z2 - (8.0 / 9.0) * z1 + (17.0 / 36.0) * z0) @ w2


def rk3_step_embedded(v: torch.Tensor, eps: float) -> tuple[torch.Tensor, float]:
    """One RK3 step of size ``eps`` of links ``(B, D, *L, N, N)`` and the distance d = max_links ‖W_3 − W̃‖_F
    to the embedded second-order step (module docstring): ``(W_3, d)``."""
    z0 = eps * flow_generator(v)
    w1 = expm_su(0.25 * z0) @ v
    z1 = eps * flow_generator(w1)
    low = expm_su(2.0 * z1 - z0) @ v
    w2 = expm_su((8.0 / 9.0) * z1 - (17.0 / 36.0) * z0) @ w1
    z2 = eps * flow_generator(w2)
    w3 = expm_su(0.75 * z2 - (8.0 / 9.0) * z1 + (17.0 / 36.0) * z0) @ w2
    return w3, float(torch.linalg.matrix_norm(w3 - low).max())


@dataclass(frozen=True)
class AdaptiveStats:
    """Counts of an adaptive flow: accepted and rejected steps, and ``next_eps``, the step size the
    controller proposes next (pass it on when the flow continues)."""

    accepted: int
    rejected: int
    next_eps: float


def flow_adaptive(u: torch.Tensor, t_from: float, t_to: float, tol: float = 1e-6,
                  eps: float = 0.01) -> tuple[torch.Tensor, AdaptiveStats]:
    """Flow links ``(B, D, *L, N, N)`` from ``t_from`` to ``t_to`` with step-size control (module docstring);
    the last step is shortened to land on ``t_to``. ``eps`` is the first trial step. One step size is
    shared by the whole batch (the largest d decides)."""
    if tol <= 0 or eps <= 0:
        raise ValueError(f"tol = {tol} and eps = {eps} must be positive")
    t, accepted, rejected = t_from, 0, 0
    while t_to - t > 1e-12 * max(1.0, abs(t_to)):
        step = min(eps, t_to - t)
        new, d = rk3_step_embedded(u, step)
        factor = 2.0 if d == 0 else min(2.0, max(0.2, 0.9 * (tol / d) ** (1.0 / 3.0)))
        if d <= tol:
            u, t, accepted = new, t + step, accepted + 1
            if step == eps:  # a step shortened to land on t_to says little about the next one
                eps = step * factor
        else:
            rejected += 1
            eps = step * factor
    return u, AdaptiveStats(accepted, rejected, eps)


def clover(u: torch.Tensor) -> torch.Tensor:
    """Clover field strength G_μν(x) for μ < ν, shape ``(B, D(D−1)/2, *L, N, N)`` (plane order of
    ``lattice.wilson.planes``), traceless anti-Hermitian.

    With M(x) = U_μ(x) U_ν(x+μ) and the plaquette P(x) = M(x) [U_ν(x) U_μ(x+ν)]†, the four leaves at x are
    P(x), U_μ(x−μ)† P(x−μ) U_μ(x−μ), M(x−μ−ν)† P(x−μ−ν) M(x−μ−ν) and U_ν(x−ν)† P(x−ν) U_ν(x−ν)
    (:func:`corner_leaves` with m = n = 1).
    """
    leaves = [corner_leaves(u, mu, nu, 1, 1) for mu, nu in planes(u.shape[1])]
    return torch.stack([0.25 * project_algebra(s) for s in leaves], dim=1)


def _line(link: torch.Tensor, mu: int, length: int) -> torch.Tensor:
    """Straight line U_μ(x) U_μ(x+μ) … U_μ(x+(length−1)μ) of one direction's links ``(B, *L, N, N)``."""
    out = link
    for step in range(1, length):
        out = out @ shift(link, mu, step)
    return out


def corner_leaves(u: torch.Tensor, mu: int, nu: int, m: int, n: int) -> torch.Tensor:
    """Sum over the four m × n loops (m spacings along μ, n along ν, orientation μ → ν) that have a
    corner at x, each as a loop starting and ending at x; ``(B, *L, N, N)``.

    With the loop R(y) = A(y) [B(y) C(y + nν)]† based at its corner y, A(y) = L_μ(y) L_ν(y + mμ) and
    B = L_ν, C = L_μ the straight lines, the leaves are R(x), L_μ(y)† R(y) L_μ(y) at y = x − mμ,
    A(y)† R(y) A(y) at y = x − mμ − nν, and L_ν(y)† R(y) L_ν(y) at y = x − nν.
    """
    line_mu, line_nu = _line(u[:, mu], mu, m), _line(u[:, nu], nu, n)
    a = line_mu @ shift(line_nu, mu, m)
    r = a @ dagger(line_nu @ shift(line_mu, nu, n))
    leaves = r + shift(dagger(line_mu) @ r @ line_mu, mu, -m) + shift(dagger(line_nu) @ r @ line_nu, nu, -n)
    return leaves + shift(shift(dagger(a) @ r @ a, mu, -m), nu, -n)


def improved_field_strength(u: torch.Tensor) -> torch.Tensor:
    """G^imp_μν = (5/3) G^{1×1} − (2/3) G^{1×2} (module docstring), shape and plane order of
    :func:`clover`: the field strength with no O(a²) error at tree level."""
    rect = [corner_leaves(u, mu, nu, 2, 1) + corner_leaves(u, mu, nu, 1, 2) for mu, nu in planes(u.shape[1])]
    g_rect = torch.stack([project_algebra(r) / 16.0 for r in rect], dim=1)
    return (5.0 / 3.0) * clover(u) - (2.0 / 3.0) * g_rect


def energy_density(u: torch.Tensor) -> torch.Tensor:
    """Clover E = −½ Σ_{μ,ν} tr G_μν G_μν = −Σ_{μ<ν} tr G_μν², averaged over sites; real ``(B,)``."""
    g = clover(u)
    return -trace(g @ g).real.sum(1).flatten(1).mean(1)


def energy_density_plaquette(u: torch.Tensor) -> torch.Tensor:
    """Plaquette E = 2 Σ_{μ<ν} Re tr(1 − U_μν), averaged over sites; real ``(B,)``."""
    n = u.shape[-1]
    return 2.0 * (n - plaquette_retrace(u)).sum(1).flatten(1).mean(1)


FIELD_STRENGTHS = {"clover": clover, "improved": improved_field_strength}


def topological_charge(u: torch.Tensor, definition: str = "clover") -> torch.Tensor:
    """Q = −1/(4π²) Σ_x tr[G_01 G_23 − G_02 G_13 + G_03 G_12] of 4D links with the ``"clover"`` or the
    O(a²)-``"improved"`` field strength (module docstring); real ``(B,)``."""
    if u.shape[1] != 4:
        raise ValueError(f"the clover topological charge is defined here for D = 4, got D = {u.shape[1]}")
    if definition not in FIELD_STRENGTHS:
        raise ValueError(f"topological charge definition {definition!r}: "
                         f"expected one of {sorted(FIELD_STRENGTHS)}")
    g = FIELD_STRENGTHS[definition](u)  # planes: 01, 02, 03, 12, 13, 23
    dens = trace(g[:, 0] @ g[:, 5] - g[:, 1] @ g[:, 4] + g[:, 2] @ g[:, 3]).real
    return -dens.flatten(1).sum(1) / (4 * math.pi**2)


@dataclass(frozen=True)
class FlowHistory:
    """Measurements along a flow: times ``t`` (n,), clover ``E`` and plaquette ``E_plaq`` (n, B), and
    in 4D the clover charge ``Q`` (n, B), else None. ``t2E`` = t² E (n, B)."""

    t: torch.Tensor
    E: torch.Tensor
    E_plaq: torch.Tensor
    Q: torch.Tensor | None

    @property
    def t2E(self) -> torch.Tensor:
        return self.t[:, None] ** 2 * self.E


def wilson_flow(u: torch.Tensor, t_max: float, eps: float = 0.01,
                measure_every: int = 1) -> tuple[torch.Tensor, FlowHistory]:
    """Flow links ``(B, D, *L, N, N)`` to t = t_max (RK3 steps of size ≈ eps, the last one shortened so
    that t_max is reached exactly), measuring E, E_plaq and (D = 4) Q at t = 0 and every
    ``measure_every`` steps and at t_max. Returns the flowed links and the ``FlowHistory``."""
    n_steps = max(1, math.ceil(t_max / eps - 1e-9))
    step = t_max / n_steps
    four_d = u.shape[1] == 4
    ts, es, eps_, qs = [], [], [], []

    def record(t: float, v: torch.Tensor) -> None:
        ts.append(t)
        es.append(energy_density(v))
        eps_.append(energy_density_plaquette(v))
        if four_d:
            qs.append(topological_charge(v))

    record(0.0, u)
    for i in range(1, n_steps + 1):
        u = rk3_step(u, step)
        if i % measure_every == 0 or i == n_steps:
            record(i * step, u)
    history = FlowHistory(
        t=torch.tensor(ts, dtype=torch.float64, device=u.device), E=torch.stack(es), E_plaq=torch.stack(eps_),
        Q=torch.stack(qs) if four_d else None,
    )
    return u, history


def flow_scale(t: torch.Tensor, t2e: torch.Tensor, target: float = 0.3) -> float:
    """The flow time where t²E first reaches ``target`` (t_0 for 0.3, Lüscher 2010), by linear interpolation
    of ``t2e (n,)`` on ``t (n,)``; NaN when it never does."""
    above = torch.nonzero(t2e >= target)
    if len(above) == 0 or int(above[0]) == 0:
        return float("nan")
    i = int(above[0])
    t_lo, t_hi, e_lo, e_hi = float(t[i - 1]), float(t[i]), float(t2e[i - 1]), float(t2e[i])
    return t_lo + (target - e_lo) * (t_hi - t_lo) / (e_hi - e_lo)

"""Wilson flow, clover energy density and clover topological charge.

Reference configuration: an abelian field of constant curvature embedded in SU(N) as
diag(e^{iθ}, e^{−iθ}, 1, …). On an L_0 × L_1 torus, θ_1(x) = F x_0 and θ_0(x) = −(2πn/L_1) x_1 on the
slice x_0 = L_0 − 1 give every (0, 1) plaquette the angle F = 2πn/(L_0 L_1) (n = flux quanta); the same
construction in the (2, 3) plane with n′. Every leaf of the clover is then diag(e^{iF}, e^{−iF}, 1, …),
so G_01 = i sin F_01 diag(1, −1, 0, …) exactly and

    E = 2 (sin² F_01 + sin² F_23),   q(x) = sin F_01 sin F_23 / (2π²),   Q = V q → 2 n n′ as F → 0.
"""

import math

import pytest
import torch

from lattice.gradflow import (
    clover,
    energy_density,
    energy_density_plaquette,
    flow_generator,
    flow_scale,
    rk3_step,
    topological_charge,
    wilson_flow,
)
from lattice.sun import dagger, haar, project_algebra, unitarity_violation
from lattice.wilson import SUN, gauge_transform


def gen(seed):
    return torch.Generator().manual_seed(seed)


def abelian_flux(shape, n, fluxes):
    """Links ``(1, 4, *shape, N, N)`` with flux quanta ``fluxes = (n01, n23)`` (module docstring)."""
    theta = torch.zeros(4, *shape, dtype=torch.float64)
    coords = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    for (a, b), flux in zip([(0, 1), (2, 3)], fluxes, strict=True):
        la, lb = shape[a], shape[b]
        theta[b] = 2 * math.pi * flux / (la * lb) * coords[a]
        theta[a] = torch.where(coords[a] == la - 1, -2 * math.pi * flux / lb * coords[b], theta[a])
    phases = torch.zeros(4, *shape, n, dtype=torch.complex128)
    phases[..., 0] = torch.exp(1j * theta)
    phases[..., 1] = torch.exp(-1j * theta)
    phases[..., 2:] = 1.0
    return torch.diag_embed(phases)[None]


@pytest.mark.parametrize("n", [2, 3])
def test_constant_curvature_field(n):
    shape, fluxes = (4, 5, 3, 6), (1, 2)
    u = abelian_flux(shape, n, fluxes)
    assert max(unitarity_violation(u)) < 1e-14
    f01 = 2 * math.pi * fluxes[0] / (shape[0] * shape[1])
    f23 = 2 * math.pi * fluxes[1] / (shape[2] * shape[3])
    v = math.prod(shape)
    assert math.isclose(float(topological_charge(u)), v * math.sin(f01) * math.sin(f23) / (2 * math.pi**2),
                        rel_tol=1e-12)
    e_exact = 2 * (math.sin(f01) ** 2 + math.sin(f23) ** 2)
    assert math.isclose(float(energy_density(u)), e_exact, rel_tol=1e-12)
    assert math.isclose(float(energy_density_plaquette(u)), 4 * (2 - math.cos(f01) - math.cos(f23)),
                        rel_tol=1e-12)
    assert flow_generator(u).abs().max() < 1e-13      # a solution of the lattice field equations


def test_charge_approaches_integer_on_fine_lattice():
    u = abelian_flux((12, 12, 12, 12), 2, (1, -1))
    assert abs(float(topological_charge(u)) - (-2.0)) < 0.01


def reflect_axis0(u):
    """Parity x_0 → −x_0: U′_0(x) = U_0(Px − 0̂)†, U′_i(x) = U_i(Px)."""
    flipped = torch.flip(u, dims=[2])
    out = torch.roll(flipped, shifts=1, dims=2).clone()
    out[:, 0] = dagger(flipped[:, 0])
    return out


def test_charge_parity_and_gauge_invariance():
    th = SUN((3, 4, 3, 4), 6.0, 3)
    u = th.random_field(2, gen(1))
    u = wilson_flow(u, 0.3, eps=0.05)[0]               # smoother fields: Q of O(1)
    q = topological_charge(u)
    assert (topological_charge(reflect_axis0(u)) + q).abs().max() < 1e-10
    assert torch.allclose(th.action(reflect_axis0(u)), th.action(u), atol=1e-10)
    g = haar((2, 3, 4, 3, 4), 3, gen(2))
    v = gauge_transform(u, g)
    assert (topological_charge(v) - q).abs().max() < 1e-10
    assert (energy_density(v) - energy_density(u)).abs().max() < 1e-10
    gs = clover(u)
    assert torch.allclose(project_algebra(gs), gs, atol=1e-14)


@pytest.mark.parametrize("shape,n", [((6, 6), 2), ((3, 3, 3, 3), 3)])
def test_flow_lowers_action_monotonically(shape, n):
    th = SUN(shape, 1.0, n)
    u = th.random_field(2, gen(3))
    actions = [th.action(u)]
    for _ in range(15):
        u = rk3_step(u, 0.03)
        actions.append(th.action(u))
    s = torch.stack(actions)
    assert bool((s[1:] < s[:-1]).all())
    assert max(unitarity_violation(u)) < 1e-12


def test_rk3_is_third_order():
    th = SUN((2, 2, 2, 2), 1.0, 3)
    u0 = th.random_field(1, gen(4))

    def flow(n_steps):
        u = u0
        for _ in range(n_steps):
            u = rk3_step(u, 0.4 / n_steps)
        return u

    ref = flow(64)
    err = [float((flow(k) - ref).abs().max()) for k in (8, 16)]
    assert 6.5 < err[0] / err[1] < 9.5, err    # global error O(ε³): ratio 8


def test_wilson_flow_history():
    th = SUN((3, 3, 3, 3), 2.0, 2)
    u = th.random_field(1, gen(5))
    v, hist = wilson_flow(u, 0.25, eps=0.1, measure_every=2)
    assert torch.allclose(hist.t, torch.tensor([0.0, 2 / 12, 0.25], dtype=torch.float64))
    assert hist.E.shape == (3, 1) and hist.Q.shape == (3, 1)
    assert bool((hist.E[1:] < hist.E[:-1]).all()) and bool((hist.E_plaq[1:] < hist.E_plaq[:-1]).all())
    assert torch.allclose(hist.t2E[-1], 0.0625 * energy_density(v))
    assert wilson_flow(th.random_field(1, gen(6))[:, :2, :, :, 0], 0.1)[1].Q is None  # 2D slice: no Q


def test_flow_scale_interpolation():
    t = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert abs(flow_scale(t, torch.tensor([0.0, 0.1, 0.2, 0.4], dtype=torch.float64)) - 2.5) < 1e-12
    assert math.isnan(flow_scale(t, torch.tensor([0.0, 0.1, 0.2, 0.25], dtype=torch.float64)))

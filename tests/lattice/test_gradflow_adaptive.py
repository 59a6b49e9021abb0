"""Wilson flow integration: third-order convergence of RK3, the embedded error estimate, the step-size
control, a pure-gauge configuration stays fixed, E(t) is gauge invariant."""

import pytest
import torch

from lattice.gradflow import energy_density, flow_adaptive, rk3_step, rk3_step_embedded
from lattice.sun import haar, identity
from lattice.wilson import SUN, gauge_transform


def gen(seed):
    return torch.Generator().manual_seed(seed)


def start(n=3, shape=(2, 2, 2, 2), seed=1):
    """A Haar-random configuration flowed a little: rough but not pathological."""
    u = SUN(shape, 1.0, n).random_field(1, gen(seed))
    for _ in range(5):
        u = rk3_step(u, 0.02)
    return u


def fixed_flow(u, t, n_steps):
    for _ in range(n_steps):
        u = rk3_step(u, t / n_steps)
    return u


@pytest.mark.parametrize("n", [2, 3])
def test_rk3_global_error_is_third_order(n):
    u, t = start(n), 0.4
    ref = fixed_flow(u, t, 256)
    errs = [float((fixed_flow(u, t, k) - ref).abs().max()) for k in (16, 32, 64)]
    for coarse, fine in zip(errs, errs[1:], strict=False):
        assert 6.0 < coarse / fine < 10.0, errs  # 2³ = 8


def test_embedded_estimate_is_third_order_locally():
    u = start()
    d = [rk3_step_embedded(u, eps)[1] for eps in (0.04, 0.02, 0.01)]
    for coarse, fine in zip(d, d[1:], strict=False):
        assert 6.0 < coarse / fine < 10.0, d
    w3, _ = rk3_step_embedded(u, 0.02)
    assert (w3 - rk3_step(u, 0.02)).abs().max() < 1e-14


def test_step_size_control_meets_tolerance_and_converges():
    u, t = start(), 0.5
    ref = fixed_flow(u, t, 400)
    errs, steps = [], []
    tols = (1e-4, 1e-5, 1e-6)
    for tol in tols:
        v, stats = flow_adaptive(u, 0.0, t, tol=tol, eps=0.05)
        errs.append(float((v - ref).abs().max()))
        steps.append(stats.accepted)
    assert all(e < tol for e, tol in zip(errs, tols, strict=True)), errs
    assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5, errs
    assert steps[0] < steps[1] < steps[2], steps


def test_landing_on_grid_times_matches_one_flow():
    u = start(shape=(2, 2, 2, 2))
    one, _ = flow_adaptive(u, 0.0, 0.3, tol=1e-7, eps=0.01)
    mid, stats = flow_adaptive(u, 0.0, 0.13, tol=1e-7, eps=0.01)
    two, _ = flow_adaptive(mid, 0.13, 0.3, tol=1e-7, eps=stats.next_eps)
    assert (one - two).abs().max() < 1e-6


@pytest.mark.parametrize("n", [2, 3])
def test_pure_gauge_stays_fixed(n):
    g = haar((1, 3, 3, 3, 3), n, gen(2))
    u = gauge_transform(identity((1, 4, 3, 3, 3, 3), n), g)
    v, stats = flow_adaptive(u, 0.0, 1.0, tol=1e-6)
    assert (v - u).abs().max() < 1e-12
    assert float(energy_density(v).abs().max()) < 1e-20


def test_energy_density_is_gauge_invariant_along_the_flow():
    u = start(shape=(2, 3, 2, 2), seed=5)
    g = haar((1, 2, 3, 2, 2), 3, gen(6))
    a, _ = flow_adaptive(u, 0.0, 0.6, tol=1e-6)
    b, _ = flow_adaptive(gauge_transform(u, g), 0.0, 0.6, tol=1e-6)
    torch.testing.assert_close(energy_density(a), energy_density(b), rtol=1e-9, atol=1e-12)
    assert abs(float(energy_density(a) - energy_density(u))) > 0.01  # the flow smoothed something

"""Flow scales from known curves: t₀ and w₀ of t²E = c t, their propagated errors, Q interpolation, and
the measured primaries on a flowed configuration."""

import math

import numpy as np
import pytest
import torch

from lattice.wilson import SUN
from observables.derived import analyze
from observables.flow_scales import FlowGrid, charge_at, flow_derived, flow_primaries, t0_of, w0_of


def test_scales_of_a_linear_curve():
    grid = FlowGrid(t_max=2.0, dt=0.1)
    t = grid.times
    c = 0.2
    e = np.where(t > 0, c / np.maximum(t, 1e-300), 0.0)  # t²E = c t exactly
    assert t0_of(t, e) == pytest.approx(0.3 / c, rel=1e-12)
    assert w0_of(t, e) == pytest.approx(math.sqrt(0.3 / c), rel=1e-12)
    assert math.isnan(t0_of(t, 0.01 * e))  # never reaches 0.3


def test_t0_error_is_the_propagated_one():
    """Per-configuration curves t²E_i = c_i t: t₀ = 0.3/⟨c⟩, σ(t₀) = 0.3 σ(⟨c⟩)/⟨c⟩²."""
    grid = FlowGrid(t_max=2.0, dt=0.1, report_every=10)
    rng = np.random.default_rng(1)
    c = 0.2 + 0.02 * rng.standard_normal(500)
    t = grid.times
    series = {f"E_{k}": (c / t[k] if k else np.zeros_like(c)) for k in range(len(t))}
    series.update({f"Eplaq_{k}": v for k, v in series.items()})
    res = analyze(series, flow_derived(grid), S=0.0)
    assert res["t0"].mean == pytest.approx(0.3 / c.mean(), rel=1e-9)
    assert res["t0"].err == pytest.approx(0.3 * c.std() / math.sqrt(len(c) - 1) / c.mean() ** 2, rel=1e-3)
    assert res["t2E_1"].mean == pytest.approx(c.mean(), rel=1e-12)
    assert res["w0"].mean == pytest.approx(math.sqrt(0.3 / c.mean()), rel=1e-9)


def test_charge_interpolation():
    grid = FlowGrid(t_max=1.0, dt=0.1, q_every=2)
    series = {f"Q_{k}": np.array([float(k), -float(k)]) for k in grid.q_indices}
    np.testing.assert_allclose(charge_at(grid, series, 0.3), [3.0, -3.0])
    assert charge_at(grid, series, 1.5) is None and charge_at(grid, series, float("nan")) is None


def test_primaries_of_a_flowed_configuration():
    u = SUN((2, 2, 2, 2), 2.0, 3).random_field(2, torch.Generator().manual_seed(3))
    grid = FlowGrid(t_max=0.4, dt=0.2, q_every=1)
    out = flow_primaries(u, grid)
    assert set(out) == {f"{p}_{k}" for p in ("E", "Eplaq", "Q") for k in range(3)}
    assert all(v.shape == (2,) for v in out.values())
    # the flow is the steepest descent of the Wilson action: the plaquette E decreases monotonically
    assert torch.all(out["Eplaq_2"] < out["Eplaq_1"]) and torch.all(out["Eplaq_1"] < out["Eplaq_0"])

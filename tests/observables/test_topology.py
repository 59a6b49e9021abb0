"""Topological-charge diagnostics: tunnelling counts, histograms, summaries and plots."""

import numpy as np
import pytest

from lattice import exact_u1
from observables.topology import (
    charge_histogram,
    cost_per_independent_sample,
    integer_charges,
    plot_charge_histogram,
    plot_charge_history,
    summarize_topology,
    tunnelling_events,
    tunnelling_rate,
)


def test_tunnelling_counts_by_hand():
    q = np.array([0, 0, 1, 1, 0], dtype=float)
    assert tunnelling_events(q) == (2, 4)
    assert tunnelling_rate(q) == 0.5
    two_chains = np.stack([q, np.zeros(5)], axis=1)  # (N, R) layout
    assert tunnelling_events(two_chains) == (2, 8)
    ragged = [np.array([1.0, -1.0, -1.0]), np.array([2.0, 2.0])]
    assert tunnelling_events(ragged) == (1, 3)
    assert np.isnan(tunnelling_rate([np.array([3.0])]))


def test_rounding_absorbs_float_noise():
    q = np.array([1 - 1e-9, 1 + 1e-12, -2e-10, 0.0])
    assert [c.tolist() for c in integer_charges(q)] == [[1, 1, 0, 0]]
    assert tunnelling_events(q) == (1, 3)


def test_histogram():
    charges, freq = charge_histogram(np.array([-1, 0, 0, 2, 2, 2], dtype=float))
    assert charges.tolist() == [-1, 0, 1, 2]
    assert np.allclose(freq, [1 / 6, 2 / 6, 0, 3 / 6])


def test_summary_of_independent_draws_from_exact_distribution():
    charges, probs = exact_u1.charge_distribution(2.0, 8)
    rng = np.random.default_rng(0)
    probs = np.clip(probs, 0, None) / np.clip(probs, 0, None).sum()
    q = rng.choice(charges, size=(4000, 4), p=probs).astype(float)
    s = summarize_topology(q)
    assert s.n == 16000 and s.max_non_integer == 0.0
    assert abs(s.q_mean) < 4 * s.q_err
    assert abs(s.q2_mean - exact_u1.q2(2.0, 8)) < 4 * s.q2_err
    assert s.tau_q == pytest.approx(0.5, abs=0.1)
    assert s.tunnelling_rate > 0.5  # independent draws change charge most of the time
    assert s.cost_per_independent(0.01) == pytest.approx(2 * s.tau_q * 0.01)
    assert cost_per_independent_sample(3.0, 0.5) == 3.0


def test_frozen_chain_has_no_tunnelling():
    q = np.ones((500, 3))
    q[:, 1] = -2
    s = summarize_topology(q)
    assert s.tunnelling_rate == 0.0 and s.n_tunnelling == 0


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(1)
    q = np.cumsum(rng.integers(-1, 2, size=(300, 3)), axis=0).astype(float)
    hist = plot_charge_history(q, tmp_path / "q_history.png", label="hmc")
    charges, probs = exact_u1.charge_distribution(2.0, 8)
    exact = dict(zip(charges.tolist(), probs.tolist(), strict=True))
    dist = plot_charge_histogram(q, tmp_path / "sub" / "q_hist.png", exact=exact, label="hmc")
    for path in (hist, dist):
        assert path.exists() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

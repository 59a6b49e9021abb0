"""Pareto k̂ (Zhang–Stephens GPD fit, PSIS tail rule) against ArviZ 0.23.4 and known tails.

The reference values were computed with ``arviz.psislw(logw, reff=1.0)`` on the same arrays
(ArviZ 0.23.4 in a separate environment; ArviZ is not a dependency of latflow).
"""

import math

import numpy as np
import pytest

from observables.psis import K_BAD, K_SLOW, ParetoK, gpd_fit, pareto_k, tail_length


def _cases():
    rng = np.random.default_rng(20)
    return {
        "normal_1000": rng.normal(size=1000),
        "normal_s3_4000": 3 * rng.normal(size=4000),
        "pareto07_2000": np.log(rng.pareto(1 / 0.7, size=2000) + 1),
        "student_500": rng.standard_t(3, size=500),
        "uniform_100": rng.uniform(size=100),
    }


ARVIZ = {
    "normal_1000": 0.213819826091974,
    "normal_s3_4000": 0.9985805862200483,
    "pareto07_2000": 0.6489204675090752,
    "student_500": 1.2282319633222447,
    "uniform_100": -0.5228096146766795,
}


@pytest.mark.parametrize("name", sorted(ARVIZ))
def test_matches_arviz(name):
    assert pareto_k(_cases()[name]).k == pytest.approx(ARVIZ[name], abs=1e-10)


def test_shape_of_known_tails():
    """Exact GPD exceedances with k = 0.3 and an exponential tail (k = 0): the fit recovers the shape."""
    rng = np.random.default_rng(1)
    u = rng.uniform(size=20000)
    k_true, sigma = 0.3, 2.0
    x = sigma / k_true * (u ** (-k_true) - 1)  # GPD(σ, k) by inversion
    k, s = gpd_fit(x)
    assert abs(k - k_true) < 0.03 and abs(s / sigma - 1) < 0.05
    assert abs(gpd_fit(rng.exponential(size=20000))[0]) < 0.03


def test_invariant_under_normalisation_and_order():
    lw = _cases()["normal_1000"]
    base = pareto_k(lw).k
    assert pareto_k(lw + 700.0).k == pytest.approx(base, abs=1e-9)
    assert pareto_k(lw[::-1]).k == pytest.approx(base, abs=1e-12)
    assert pareto_k(np.append(lw, [np.nan, -np.inf])).n == 1000


def test_degenerate_inputs_give_nan():
    assert math.isnan(pareto_k(np.zeros(1000)).k)  # equal weights: no tail above the threshold
    assert math.isnan(pareto_k(np.arange(10.0)).k)  # N = 10: a tail of 2
    assert tail_length(100) == 20 and tail_length(10000) == 300


def test_warnings():
    assert ParetoK(0.3, 1.0, 20, 100).warning() is None
    assert "slowly" in ParetoK(0.6, 1.0, 20, 100).warning()
    assert "unreliable" in ParetoK(0.8, 1.0, 20, 100).warning()
    assert K_SLOW < K_BAD


def test_a_tail_wider_than_the_float_range_is_infinitely_heavy():
    """Log weights spread over thousands (an untrained flow at L = 32) underflow e^{logw - max}: k̂ is
    inf, with the > 0.7 warning, never a division by zero."""
    logw = np.concatenate([np.zeros(900), np.linspace(0.0, 5000.0, 100)])
    result = pareto_k(logw)
    assert result.k == float("inf")
    assert "> 0.7" in result.warning()

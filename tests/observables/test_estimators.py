"""Tests of the blocked jackknife, the reweighting ESS and the self-normalised reweighted mean."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

from observables.estimators import ess, jackknife, reweighted_mean


def test_jackknife_of_mean_is_standard_error():
    x = np.random.default_rng(0).standard_normal(500)
    res = jackknife(lambda m: m, x, n_bins=500)
    assert res.mean == pytest.approx(x.mean(), rel=1e-12)
    assert res.err == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=1e-10)
    assert res.block_size == 1 and res.samples.shape == (500,)


def test_jackknife_bias_of_square():
    """For θ = x̄², the leave-one-out jackknife bias estimate is exactly s²/N (s² with ddof=1)."""
    x = 2.0 + np.random.default_rng(1).standard_normal(200)
    res = jackknife(lambda m: m**2, x, n_bins=200)
    assert res.bias == pytest.approx(x.var(ddof=1) / len(x), rel=1e-8)


def test_jackknife_blocks_vector_and_frozen():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((1003, 2)) + [1.0, 4.0]
    res = jackknife(lambda m: np.array([m[0] + m[1], m[0] * m[1]]), data, n_bins=10)
    assert res.block_size == 100 and res.samples.shape == (10, 2)
    used = data[:1000].mean(axis=0)
    np.testing.assert_allclose(res.mean, [used.sum(), used.prod()])
    assert res.err.shape == (2,) and np.all(res.err > 0)
    # the error of the sum of independent unit-variance columns is about sqrt(2/N)
    assert res.err[0] == pytest.approx(math.sqrt(2 / 1000), rel=4 / math.sqrt(2 * 9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.n_bins = 3
    for bad in (1, 2000):
        with pytest.raises(ValueError):
            jackknife(lambda m: m, data, n_bins=bad)


def test_ess_limits():
    n = 1000
    assert ess(np.zeros(n)) == pytest.approx(1.0, rel=1e-12)
    assert ess(np.full(n, -3.7)) == pytest.approx(1.0, rel=1e-12)
    one = np.full(n, -np.inf)
    one[17] = 0.0
    assert ess(one) == pytest.approx(1.0 / n, rel=1e-12)
    dominant = np.zeros(n)
    dominant[0] = 1000.0
    assert ess(dominant) == pytest.approx(1.0 / n, rel=1e-12)


def test_ess_shift_invariant_and_stable():
    logw = np.random.default_rng(3).normal(0.0, 1.0, 4000)
    ref = ess(logw)
    assert 1 / len(logw) < ref < 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for shift in (1000.0, -1000.0, 1e5):
            assert ess(logw + shift) == pytest.approx(ref, rel=1e-9)
    w = np.exp(logw)
    assert ref == pytest.approx(w.sum() ** 2 / (len(w) * (w**2).sum()), rel=1e-12)


def test_ess_lognormal_weights():
    """For logw ~ N(0, s²), (Σw)²/(NΣw²) → E[w]²/E[w²] = exp(−s²) as N → ∞."""
    logw = np.random.default_rng(4).normal(0.0, 0.5, 200000)
    assert ess(logw) == pytest.approx(math.exp(-0.25), rel=0.01)


def test_ess_rejects_bad_weights():
    for bad in ([], [0.0, np.nan], [np.inf, 0.0], [-np.inf, -np.inf]):
        with pytest.raises(ValueError):
            ess(np.array(bad))


def test_reweighted_mean_gaussian_shift():
    """q = N(0,1), p = N(μ,1): logw = μx + const, ⟨x⟩_p = μ and N σ² ≈ e^{μ²}(1 + μ²) (delta method)."""
    mu, n = 0.5, 100000
    x = np.random.default_rng(5).standard_normal(n)
    res = reweighted_mean(x, mu * x + 123.0, n_bins=200)
    assert abs(res.mean - mu) < 4 * res.err
    err_exact = math.sqrt(math.exp(mu**2) * (1 + mu**2) / n)
    assert res.err == pytest.approx(err_exact, rel=4 / math.sqrt(2 * 199))
    assert res.ess == pytest.approx(math.exp(-(mu**2)), rel=0.02)
    assert res.n == n


def test_reweighted_mean_equal_weights_is_plain_mean():
    x = np.random.default_rng(6).standard_normal(1000)
    res = reweighted_mean(x, np.full(1000, 5.0), n_bins=1000)
    assert res.mean == pytest.approx(x.mean(), rel=1e-12)
    assert res.err == pytest.approx(x.std(ddof=1) / math.sqrt(1000), rel=1e-9)
    assert res.ess == pytest.approx(1.0)
    with pytest.raises(ValueError):
        reweighted_mean(x[:-1], np.zeros(1000))

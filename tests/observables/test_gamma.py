"""Tests of the Gamma method against AR(1) chains with known τ_int and against pyerrors."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from observables.gamma import (
    as_replicas,
    autocovariance,
    gamma_analysis,
    gamma_derived,
    rho_errors,
    tau_int_curve,
)


def ar1(rng, a, n):
    """Stationary AR(1) chain x_t = a x_{t-1} + sqrt(1-a²) ε_t with unit variance, shape (n,)."""
    eps = rng.standard_normal(n)
    x_prev = rng.standard_normal()
    return lfilter([math.sqrt(1.0 - a * a)], [1.0, -a], eps, zi=[a * x_prev])[0]


def tau_exact(a):
    """τ_int = 1/2 + Σ_{t≥1} a^t = (1+a) / (2(1-a))."""
    return (1.0 + a) / (2.0 * (1.0 - a))


@pytest.mark.parametrize(("a", "seed"), [(0.0, 11), (0.5, 12), (0.9, 13)])
def test_ar1_tau_int_mean_and_error(a, seed):
    rng = np.random.default_rng(seed)
    reps = [ar1(rng, a, n) for n in (30000, 17000, 9000)]  # unequal lengths
    res = gamma_analysis(reps)
    n = sum(len(r) for r in reps)
    assert res.n == n and res.n_replicas == 3
    # the check must be tight enough to mean something
    assert res.tau_int_err < 0.1 * res.tau_int
    assert abs(res.tau_int - tau_exact(a)) < 4 * res.tau_int_err
    assert abs(res.mean) < 4 * res.err
    # σ(ā)² = 2 τ_int var / N exactly for AR(1); relative error of err is σ(τ)/(2τ)
    err_exact = math.sqrt(2 * tau_exact(a) / n)
    assert abs(res.err / err_exact - 1) < 4 * res.tau_int_err / (2 * res.tau_int) + 0.01
    assert res.rho[0] == 1.0 and len(res.rho) == len(res.rho_err) == len(res.tau_int_of_w)
    assert res.window < len(res.rho)


def test_wrong_tau_would_fail():
    """An AR(1) with a = 0.8 is clearly distinguished from a = 0.9 at this statistics."""
    rng = np.random.default_rng(5)
    res = gamma_analysis(ar1(rng, 0.8, 40000))
    assert abs(res.tau_int - tau_exact(0.8)) < 4 * res.tau_int_err
    assert abs(res.tau_int - tau_exact(0.9)) > 4 * res.tau_int_err


def test_autocovariance_matches_direct_sum():
    rng = np.random.default_rng(0)
    deltas = [rng.standard_normal(n) for n in (13, 7, 13, 4)]
    t_max = 8
    got = autocovariance(deltas, t_max)
    for t in range(t_max + 1):
        num = sum(float(np.dot(d[: len(d) - t], d[t:])) for d in deltas if len(d) > t)
        pairs = sum(max(len(d) - t, 0) for d in deltas)
        want = num / pairs if pairs else 0.0
        assert got[t] == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_tau_int_curve():
    rho = np.array([1.0, 0.5, 0.25, -0.1])
    np.testing.assert_allclose(tau_int_curve(rho), [0.5, 1.0, 1.25, 1.15])


def test_rho_errors_white_noise():
    """With ρ(t) = δ_{t0} the Madras–Sokal sum has the single term k = t: σ(ρ(t)) = 1/sqrt(N) for t ≥ 1."""
    rho = np.zeros(50)
    rho[0] = 1.0
    np.testing.assert_allclose(rho_errors(rho, 5, 400, 30), [0.0] + [0.05] * 30)
    res = gamma_analysis(np.random.default_rng(4).standard_normal(10000))
    np.testing.assert_allclose(res.rho_err[1:], 0.01, rtol=0.1)
    assert np.all(np.abs(res.rho[1:]) < 4 * res.rho_err[1:])


def test_input_layouts_agree():
    rng = np.random.default_rng(1)
    block = np.stack([ar1(rng, 0.6, 2000) for _ in range(4)], axis=1)  # (N, R)
    a = gamma_analysis(block)
    b = gamma_analysis([block[:, r] for r in range(4)])
    assert (a.mean, a.err, a.tau_int, a.window) == (b.mean, b.err, b.tau_int, b.window)
    assert a.n_replicas == 4 and a.n == 8000
    one = gamma_analysis(block[:, 0])
    assert one.n_replicas == 1 and one.err == gamma_analysis([block[:, 0]]).err
    torch = pytest.importorskip("torch")
    t = gamma_analysis(torch.from_numpy(block))
    assert t.err == a.err
    assert len(as_replicas([1.0, 2.0, 3.0])) == 1


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        gamma_analysis(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError):
        gamma_analysis(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        gamma_analysis(np.arange(10.0), S=-1.0)
    with pytest.raises(ValueError):
        gamma_analysis([1.0])


def test_constant_series_is_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (np.full(100, 0.1), [np.full(50, 3.0), np.full(20, 3.0)], np.zeros((10, 3))):
            res = gamma_analysis(data)
            assert res.err == 0.0 and res.tau_int == 0.5 and res.tau_int_err == 0.0
            assert np.isfinite(res.mean) and res.window == 0
        der = gamma_derived(lambda m: m[0] * m[1], [np.full(30, 2.0), np.full(30, 4.0)])
        assert der.mean == 8.0 and der.err == 0.0


def test_S_zero_gives_naive_error():
    rng = np.random.default_rng(2)
    x = ar1(rng, 0.9, 5000)
    res = gamma_analysis(x, S=0.0)
    assert res.window == 0 and res.tau_int == pytest.approx(0.5)
    assert res.err == pytest.approx(np.std(x, ddof=1) / math.sqrt(len(x)), rel=1e-3)
    assert gamma_analysis(x, S=2.0).window > gamma_analysis(x, S=1.0).window


def test_anticorrelated_series_floored_at_half():
    """Differenced white noise has ρ(1) = −1/2 (τ_int(1) ≈ 0): τ_int is floored at 1/2, as in pyerrors."""
    x = np.random.default_rng(6).standard_normal(20001)
    y = np.diff(x)
    res = gamma_analysis(y)
    assert res.tau_int_of_w[1] < 0.1 and res.window == 1
    assert res.tau_int == pytest.approx(0.5 * (1 + 3 / len(y)) / (1 + 1 / len(y)), rel=1e-12)
    assert res.err == pytest.approx(np.std(y) / math.sqrt(len(y)), rel=1e-3)
    assert_matches_pyerrors(res, pe_numbers(pe_obs([y])), rel=1e-9)


def test_result_is_frozen():
    res = gamma_analysis(np.random.default_rng(3).standard_normal(100))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.err = 1.0
    with pytest.raises(ValueError):
        res.rho[0] = 2.0
    assert res.n_eff == pytest.approx(res.n / (2 * res.tau_int))


def correlated_pair(rng, lengths, a=0.7):
    """Two correlated observables per replica: A = 3 + x, B = 5 + 0.5 x + y with x, y AR(1)."""
    xs = [ar1(rng, a, n) for n in lengths]
    a_obs = [3.0 + x for x in xs]
    b_obs = [5.0 + 0.5 * x + ar1(rng, 0.5, len(x)) for x in xs]
    return a_obs, b_obs


def test_derived_ratio_analytic():
    """B = μ_b + c x with the same x as A: δ(A/B) = k x exactly to first order, k = 1/μ_b − μ_a c/μ_b²."""
    rng = np.random.default_rng(7)
    a_coef, mu_a, mu_b, c = 0.8, 3.0, 5.0, 0.5
    x = ar1(rng, a_coef, 60000)
    res = gamma_derived(lambda m: m[0] / m[1], [mu_a + x, mu_b + c * x])
    k = 1 / mu_b - mu_a * c / mu_b**2
    err_exact = abs(k) * math.sqrt(2 * tau_exact(a_coef) / len(x))
    assert res.mean == pytest.approx(np.mean(mu_a + x) / np.mean(mu_b + c * x), rel=1e-14)
    assert abs(res.mean - mu_a / mu_b) < 4 * res.err
    assert abs(res.err / err_exact - 1) < 4 * res.tau_int_err / (2 * res.tau_int)
    assert abs(res.tau_int - tau_exact(a_coef)) < 4 * res.tau_int_err


def test_derived_ratio_vs_jackknife():
    from observables.estimators import jackknife

    rng = np.random.default_rng(8)
    a_obs, b_obs = correlated_pair(rng, [80000])
    res = gamma_derived(lambda m: m[0] / m[1], [a_obs, b_obs])
    jk = jackknife(lambda m: m[0] / m[1], np.stack([a_obs[0], b_obs[0]], axis=1), n_bins=100)
    assert res.mean == pytest.approx(jk.mean, rel=1e-12)
    rel = math.hypot(1 / math.sqrt(2 * 99), res.tau_int_err / (2 * res.tau_int))
    assert abs(jk.err / res.err - 1) < 4 * rel


def test_derived_linear_equals_primary_and_user_gradient():
    rng = np.random.default_rng(9)
    a_obs, b_obs = correlated_pair(rng, [3000, 2000])
    lin = gamma_derived(lambda m: 2 * m[0] - m[1], [a_obs, b_obs])
    prim = gamma_analysis([2 * a - b for a, b in zip(a_obs, b_obs, strict=True)])
    assert lin.err == pytest.approx(prim.err, rel=1e-7)
    assert lin.mean == pytest.approx(prim.mean, rel=1e-12)
    f = lambda m: m[0] * m[1] ** 2  # noqa: E731
    num = gamma_derived(f, [a_obs, b_obs])
    ana = gamma_derived(f, [a_obs, b_obs], grad=lambda m: [m[1] ** 2, 2 * m[0] * m[1]])
    assert num.err == pytest.approx(ana.err, rel=1e-7)
    with pytest.raises(ValueError):
        gamma_derived(f, [a_obs, [b[:-1] for b in b_obs]])


# ---------------------------------------------------------------- pyerrors
# pyerrors (Obs.gamma_method defaults: S=2.0 unless given, tau_exp=0, N_sigma=1, fft=True) centres each
# replica on its own mean; with replica_means=True we use the same convention and must agree to
# rounding. Our default centres on the global mean (Wolff eq. 31): identical for one replica; for several
# replicas it differs by O((2W+1)/N) and by the occasional shift of W, well inside the statistical
# uncertainty σ(err)/err ≈ σ(τ_int)/(2 τ_int) but not always inside 1%.


def pe_obs(reps, name="ens"):
    pe = pytest.importorskip("pyerrors")
    return pe.Obs(list(reps), [f"{name}|r{i}" for i in range(len(reps))])


def pe_numbers(obs, name="ens"):
    obs.gamma_method(S=1.5)
    return obs.value, obs.dvalue, obs.e_tauint[name], obs.e_dtauint[name], obs.e_windowsize[name]


def assert_matches_pyerrors(ours, numbers, rel):
    value, dvalue, tau, dtau, window = numbers
    assert ours.mean == pytest.approx(value, rel=1e-12)
    assert ours.window == window
    np.testing.assert_allclose([ours.err, ours.tau_int, ours.tau_int_err], [dvalue, tau, dtau], rtol=rel)


@pytest.mark.parametrize("lengths", [[20000], [12000, 7000]])
@pytest.mark.parametrize(("a", "seed"), [(0.0, 21), (0.5, 22), (0.9, 23)])
def test_agrees_with_pyerrors(a, seed, lengths):
    rng = np.random.default_rng(seed)
    reps = [1.5 + ar1(rng, a, n) for n in lengths]
    numbers = pe_numbers(pe_obs(reps))
    assert_matches_pyerrors(gamma_analysis(reps, S=1.5, replica_means=True), numbers, rel=1e-9)
    ours = gamma_analysis(reps, S=1.5)
    if len(lengths) == 1:
        assert_matches_pyerrors(ours, numbers, rel=1e-9)
    else:
        assert ours.mean == pytest.approx(numbers[0], rel=1e-12)
        assert abs(ours.err / numbers[1] - 1) < 4 * ours.tau_int_err / (2 * ours.tau_int)
        assert abs(ours.tau_int - numbers[2]) < 4 * ours.tau_int_err


@pytest.mark.parametrize("lengths", [[20000], [12000, 7000]])
def test_derived_agrees_with_pyerrors(lengths):
    rng = np.random.default_rng(31)
    a_obs, b_obs = correlated_pair(rng, lengths)
    numbers = pe_numbers(pe_obs(a_obs) / pe_obs(b_obs))
    ratio = lambda m: m[0] / m[1]  # noqa: E731
    # the numerical gradient (relative step 1e-6) costs ~1e-9 against pyerrors' automatic derivative
    assert_matches_pyerrors(gamma_derived(ratio, [a_obs, b_obs], S=1.5, replica_means=True), numbers, 1e-6)
    ours = gamma_derived(ratio, [a_obs, b_obs], S=1.5)
    if len(lengths) == 1:
        assert_matches_pyerrors(ours, numbers, rel=1e-6)
    else:
        assert abs(ours.err / numbers[1] - 1) < 4 * ours.tau_int_err / (2 * ours.tau_int)


def test_global_mean_exposes_inconsistent_replicas():
    """Eq. 31 centres on the global mean: offset replicas inflate Γ(t); per-replica centring hides it."""
    rng = np.random.default_rng(41)
    reps = [1.0 + rng.standard_normal(4000), -1.0 + rng.standard_normal(3000)]
    pooled = np.concatenate(reps)
    wolff = gamma_analysis(reps)
    per_replica = gamma_analysis(reps, replica_means=True)
    assert wolff.variance == pytest.approx(np.mean((pooled - pooled.mean()) ** 2), rel=1e-12)
    assert per_replica.variance == pytest.approx(np.mean(np.concatenate([r - r.mean() for r in reps]) ** 2))
    assert wolff.err > 5 * per_replica.err
    assert wolff.mean == per_replica.mean == pytest.approx(pooled.mean(), rel=1e-12)


def test_a_result_prints_compactly():
    """``print(result)`` gives the value with its error in the last digits, e.g. ``0.0441(12)``."""
    from dataclasses import replace

    result = gamma_analysis(np.random.default_rng(0).normal(size=400))
    assert str(replace(result, mean=0.04412, err=0.001234)) == "0.0441(12)"
    assert str(replace(result, mean=0.74123, err=0.00312)) == "0.7412(31)"

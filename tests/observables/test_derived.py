"""Derived quantities: latflow's linear error propagation against pyerrors' on the same data (several
replicas, autocorrelated), and the analysis helper."""

import numpy as np
import pytest

from observables.derived import analyze, derived


def ar1(n, rho, rng, mean):
    """An AR(1) series with autocorrelation ρ(t) = rho^t."""
    x = np.empty(n)
    x[0] = rng.standard_normal()
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * rng.standard_normal()
    return mean + x


def replicas(seed):
    rng = np.random.default_rng(seed)
    a = [ar1(n, 0.8, rng, 2.0) for n in (800, 600, 700)]
    b = [0.5 * r + 0.3 * ar1(len(r), 0.5, rng, 1.0) for r in a]  # correlated with a
    return a, b


@pytest.mark.parametrize("f", [lambda m: m[0] / m[1], lambda m: np.log(m[0]) - m[1] ** 2])
def test_errors_agree_with_pyerrors(f):
    pe = pytest.importorskip("pyerrors")
    a, b = replicas(3)
    names = [f"ens|r{i}" for i in range(3)]
    oa, ob = pe.Obs(a, names), pe.Obs(b, names)
    ref = pe.derived_observable(lambda x, **kw: np.float64(f(np.asarray(x, dtype=float))), [oa, ob],
                                num_grad=True)
    ref.gamma_method(S=1.5)
    ours = derived(f, [a, b], S=1.5, replica_means=True)  # pyerrors subtracts per-replica means
    assert ours.mean == pytest.approx(ref.value, rel=1e-12)
    assert ours.err == pytest.approx(ref.dvalue, rel=1e-4)
    assert ours.tau_int == pytest.approx(ref.e_tauint["ens"], rel=1e-3)
    assert ours.err > 1.5 * derived(f, [a, b], S=0.0).err  # the autocorrelation is in the error


def test_analyze_skips_missing_inputs_and_nan_values():
    a, b = replicas(4)
    res = analyze({"a": a, "b": b}, [("ratio", ("a", "b"), lambda m: m[0] / m[1]),
                                     ("missing", ("a", "c"), lambda m: m[0]),
                                     ("nan", ("a",), lambda m: float("nan"))])
    assert set(res) == {"ratio"}
    assert res["ratio"].mean == pytest.approx(np.concatenate(a).mean() / np.concatenate(b).mean())

r"""Wilson loops against the 2D character expansion on the torus, from HMC and from flow-MH ensembles.

A contractible loop of area A on a torus of V plaquettes cuts it into a disc (A plaquettes) and a torus
with a hole (V − A). The amplitude of a genus-g surface of area A with boundary holonomy U is
Σ_r d_r^{1−2g} (c_r/d_r)^A χ_r(U); gluing the two pieces along the loop with χ_F(U) inserted gives

    ⟨χ_F(W)⟩ = Σ_{s} Σ_{r ∈ s ⊗ F} d_s (c_s/d_s)^A  d_r^{−1} (c_r/d_r)^{V−A}  /  Σ_r (c_r/d_r)^V,

so the A enclosed plaquettes carry s and the others r = s plus one box. For U(1) (d = 1, c_n = I_n(β),
r = s + 1): ⟨cos θ_W⟩ = Σ_n I_n^A I_{n+1}^{V−A} / Σ_n I_n^V.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from lattice.exact_sun import coefficients, dimension, irreps
from lattice.exact_u1 import log_bessel_ratio
from lattice.sun import haar
from lattice.u1 import U1
from lattice.wilson import SUN, gauge_transform
from observables.derived import analyze
from observables.gamma import gamma_analysis
from observables.loops import loop_derived, polyakov_correlator, wilson_loops


def exact_u1_loop(beta: float, v: int, area: int) -> float:
    n = np.arange(-60, 61)
    lr = log_bessel_ratio(n, beta)
    lr1 = log_bessel_ratio(n + 1, beta)
    return float(np.exp(logsumexp(area * lr + (v - area) * lr1) - logsumexp(v * lr)))


def exact_sun_loop(n: int, beta: float, v: int, area: int, max_row: int = 10) -> float:
    """⟨Re tr W / N⟩ from the formula of the module docstring (Young diagrams with λ_N = 0)."""
    reps = irreps(n, max_row)
    c, _ = coefficients(reps, beta)
    index = {lam: i for i, lam in enumerate(reps)}
    dims = np.array([dimension(lam) for lam in reps], dtype=float)
    log_cd = np.log(np.maximum(c, 1e-300)) - np.log(dims)
    shift = log_cd.max()
    total = 0.0
    for s, lam in enumerate(reps):
        for row in range(n):
            new = list(lam)
            new[row] += 1
            if row > 0 and new[row] > new[row - 1]:
                continue
            if new[-1] == 1:
                new = [x - 1 for x in new]
            r = index.get(tuple(new))
            if r is None:
                continue
            weight = area * (log_cd[s] - shift) + (v - area) * (log_cd[r] - shift)
            total += dims[s] / dims[r] * math.exp(weight)
    norm = np.exp(v * (log_cd - shift)).sum()
    return total / norm / n


def test_exact_formulas_limits() -> None:
    # one plaquette (A = 1) is the plaquette expectation; SU(N) with N = 1 box counting checks against U(1)
    from lattice.exact_sun import plaquette as sun_plaquette
    from lattice.exact_u1 import plaquette as u1_plaquette

    assert exact_u1_loop(1.5, 16, 1) == pytest.approx(u1_plaquette(1.5, (4, 4)), rel=1e-10)
    for n in (2, 3):
        assert exact_sun_loop(n, 2.0, 36, 1) == pytest.approx(sun_plaquette(n, 2.0, (6, 6)), rel=1e-8)


def _series(x_list: list[torch.Tensor], r_max: int) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for x in x_list:
        for k, v in wilson_loops(x, r_max, r_max).items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.stack(v) for k, v in out.items()}  # (N, B)


def _check(series: dict[str, np.ndarray], exact, r_max: int) -> None:
    for r in range(1, r_max + 1):
        for t in range(1, r_max + 1):
            res = gamma_analysis(series[f"W_{r}x{t}"])
            value = exact(r * t)
            assert abs(res.mean - value) < 4 * res.err, (r, t, res.mean, res.err, value)
            assert res.err < 0.05
    # Creutz ratios: derived from the same means, against the exact ones
    derived = analyze(series, loop_derived(r_max, r_max))
    w = {(r, t): (1.0 if r * t == 0 else exact(r * t)) for r in range(r_max + 1) for t in range(r_max + 1)}
    for r in (r for r in range(1, r_max + 1) if w[r, r] > 0.1):
        res = derived[f"creutz_{r}x{r}"]
        chi = -math.log(w[r, r] * w[r - 1, r - 1] / (w[r, r - 1] * w[r - 1, r]))
        assert abs(res.mean - chi) < 4 * res.err, (r, res.mean, res.err, chi)


def _chain_configs(kernel, state, g, n_therm: int, n_meas: int) -> list[torch.Tensor]:
    """The fields ``(B, ...)`` after each of ``n_meas`` steps of ``kernel`` that follow ``n_therm`` unrecorded
    ones, from ``state``, all drawing from ``g``."""
    out = []
    for i in range(n_therm + n_meas):
        state, _ = kernel.step(state, g)
        if i >= n_therm:
            out.append(state.x)
    return out


def _hmc_configs(theory, n_chains: int, n_therm: int, n_meas: int, seed: int) -> list[torch.Tensor]:
    from mcmc.kernels.hmc import HMC

    g = torch.Generator().manual_seed(seed)
    kernel = HMC(theory, tau=1.0, n_steps=4, integrator="omelyan")
    return _chain_configs(kernel, kernel.init(theory.random_field(n_chains, g)), g, n_therm, n_meas)


def _flow_configs(theory, build, n_chains: int, n_therm: int, n_meas: int, seed: int) -> list[torch.Tensor]:
    """Independence Metropolis with a briefly trained flow proposal (exact whatever the flow's quality)."""
    from flows.train import TrainConfig, train_flow
    from mcmc.kernels.independence import IndependenceMetropolis

    g = torch.Generator().manual_seed(seed)
    flow = build(theory, {"n_layers": 4, "hidden": [8]}, generator=g)
    train_flow(flow, theory, TrainConfig(steps=40, batch_size=32, lr=3e-3), g, progress=False)
    kernel = IndependenceMetropolis(theory, flow.as_float64(), batch=64)
    return _chain_configs(kernel, kernel.init_from_flow(n_chains, g), g, n_therm, n_meas)


def test_u1_hmc_loops_match_character_expansion() -> None:
    th = U1((6, 6), 2.0)
    series = _series(_hmc_configs(th, 16, 20, 120, 5), 3)
    _check(series, lambda a: exact_u1_loop(2.0, 36, a), 3)
    wrong = gamma_analysis(series["W_2x2"])  # the test has teeth: β = 2.3 is excluded
    assert abs(wrong.mean - exact_u1_loop(2.3, 36, 4)) > 4 * wrong.err


@pytest.mark.parametrize("n", [2, 3])
def test_sun_hmc_loops_match_character_expansion(n: int) -> None:
    th = SUN((4, 4), 2.0, n)
    _check(_series(_hmc_configs(th, 16, 15, 100, 7 + n), 2), lambda a: exact_sun_loop(n, 2.0, 16, a), 2)


def test_u1_flow_mh_loops_match_character_expansion() -> None:
    from flows.u1.flow import build_u1_flow

    th = U1((4, 4), 1.0)
    series = _series(_flow_configs(th, build_u1_flow, 16, 10, 150, 11), 2)
    _check(series, lambda a: exact_u1_loop(1.0, 16, a), 2)


def test_su2_flow_mh_loops_match_character_expansion() -> None:
    from flows.sun.flow import build_sun_flow

    th = SUN((4, 4), 1.0, 2)
    series = _series(_flow_configs(th, build_sun_flow, 16, 10, 150, 12), 2)
    _check(series, lambda a: exact_sun_loop(2, 1.0, 16, a), 2)


def test_loops_and_polyakov_are_gauge_invariant() -> None:
    g = torch.Generator().manual_seed(3)
    th = SUN((4, 3, 2, 4), 1.0, 3)
    u = th.random_field(2, g)
    v = gauge_transform(u, haar((2, 4, 3, 2, 4), 3, g))
    a, b = wilson_loops(u, 2, 2), wilson_loops(v, 2, 2)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    pa, pb = polyakov_correlator(u), polyakov_correlator(v)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k])
    assert set(pa) == {"polyakov_corr_0", "polyakov_corr_1"}


def test_unit_links_give_one() -> None:
    x = torch.zeros(2, 2, 4, 4, dtype=torch.float64)
    loops = wilson_loops(x, 2, 2)
    assert set(loops) == {"W_1x1", "W_1x2", "W_2x1", "W_2x2"}
    for v in loops.values():
        torch.testing.assert_close(v, torch.ones(2, dtype=torch.float64))

r"""Derived quantities with Gamma-method errors, by linear error propagation (Wolff 2004, sec. 3.2).

A derived quantity is F = f(ā_1, …, ā_m), a function of the means of m primary observables measured on
the same configurations (one or several replicas). Its error comes from the projected fluctuations

    a_F,i^r = Σ_α (∂f/∂ā_α) a_α,i^r,

analysed like a primary series (``observables.gamma.gamma_derived``): the error includes every
correlation between the inputs and their autocorrelations. The τ_int reported for F is that of the
projected series a_F, Wolff's τ_int,F — the autocorrelation of exactly the combination of inputs that
carries F's error (with one dominant input it is that input's τ_int).

Usage::

    from observables.derived import derived
    ratio = derived(lambda a: a[0] / a[1], [num_series, den_series])        # a GammaResult
    ratio.mean, ratio.err, ratio.tau_int

``analyze`` evaluates a list of ``(name, inputs, f)`` triples (as ``observables.correlators.phi4_derived``
and ``observables.loops.loop_derived`` return them) on a mapping of series, leaving out a quantity
whose central value is not finite (e.g. an effective mass where G(t) is noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from observables.gamma import GammaResult, gamma_derived

Series = ArrayLike | Sequence[ArrayLike]


def derived(
    f: Callable[[np.ndarray], float],
    inputs: Sequence[Series],
    S: float = 1.5,
    *,
    grad: Callable[[np.ndarray], ArrayLike] | ArrayLike | None = None,
    replica_means: bool = False,
) -> GammaResult:
    """F = f(ā_1, …, ā_m) with its Gamma-method error. ``inputs``: m observables, each a 1-D array ``(N,)``,
    an array ``(N, R)`` of R chains or a list of replicas ``(N_r,)`` (equal shapes across inputs);
    ``grad``: ∂f/∂ā, default central differences. See the module docstring."""
    return gamma_derived(f, list(inputs), S, grad, replica_means=replica_means)


def analyze(
    series: Mapping[str, Series],
    quantities: Sequence[tuple[str, Sequence[str], Callable[[np.ndarray], float]]],
    S: float = 1.5,
    *,
    replica_means: bool = False,
) -> dict[str, GammaResult]:
    """``{name: GammaResult}`` for every ``(name, inputs, f)`` whose inputs are all in ``series`` and whose
    value f(means) is finite; the others are left out."""
    out: dict[str, GammaResult] = {}
    for name, names, f in quantities:
        if not all(n in series for n in names):
            continue
        res = derived(f, [series[n] for n in names], S, replica_means=replica_means)
        if math.isfinite(res.mean) and math.isfinite(res.err):
            out[name] = res
    return out

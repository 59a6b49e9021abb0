"""φ⁴ correlators against the exact free field: G(t), meff, χ₂, ξ₂ and U₄ from iid exact samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lattice.exact import FreeField
from observables.correlators import phi4_derived, phi4_primaries
from observables.derived import analyze

SHAPE, M2 = (8, 6), 0.3


def exact_values(shape: tuple[int, ...], m2: float) -> dict[str, float]:
    """Finite-volume free-field values from the Fourier modes G(p) = 1/(2(p̂² + m²)) (lattice.exact)."""
    prop = FreeField(shape, m2).propagator()
    l0 = shape[0]
    g0 = prop[(slice(None),) + (0,) * (len(shape) - 1)]  # G(p₀, p⃗ = 0), shape (L₀,)
    n0 = np.arange(l0)
    g = {t: float(np.mean(np.cos(2 * np.pi * n0 * t / l0) * g0)) for t in range(l0 // 2 + 1)}
    out = {f"G_{t}": g[t] for t in g}
    for t in range(1, l0 // 2):
        out[f"meff_{t}"] = math.acosh((g[t - 1] + g[t + 1]) / (2 * g[t]))
    out["chi2"] = 0.5 / m2
    p_min = 0.5 / (4 * math.sin(math.pi / l0) ** 2 + m2)
    out["xi2"] = math.sqrt((out["chi2"] / p_min - 1) / (4 * math.sin(math.pi / l0) ** 2))
    out["U4"] = 0.0
    return out


def test_xi2_of_the_free_field_is_one_over_m() -> None:
    assert exact_values(SHAPE, M2)["xi2"] == pytest.approx(1 / math.sqrt(M2), rel=1e-12)


def test_free_field_against_exact_values() -> None:
    phi = torch.from_numpy(FreeField(SHAPE, M2).sample(4000, np.random.default_rng(17)))
    series = {k: v.numpy() for k, v in phi4_primaries(phi).items()}
    results = analyze(series, phi4_derived(SHAPE), S=0.0)  # iid samples: no autocorrelation
    exact = exact_values(SHAPE, M2)
    assert set(exact) <= set(results)
    for name, value in exact.items():
        res = results[name]
        assert abs(res.mean - value) < 4 * res.err, (name, res.mean, res.err, value)


def test_wrong_mass_is_detected() -> None:
    """The comparison can fail: samples at m² = 0.3 against exact values at m² = 0.4."""
    phi = torch.from_numpy(FreeField(SHAPE, M2).sample(4000, np.random.default_rng(18)))
    results = analyze({k: v.numpy() for k, v in phi4_primaries(phi).items()}, phi4_derived(SHAPE), S=0.0)
    wrong = exact_values(SHAPE, 0.4)
    assert abs(results["chi2"].mean - wrong["chi2"]) > 4 * results["chi2"].err
    assert abs(results["xi2"].mean - wrong["xi2"]) > 4 * results["xi2"].err


def test_primaries_are_translation_invariant() -> None:
    phi = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = phi4_primaries(phi), phi4_primaries(torch.roll(phi, (2, 1), dims=(1, 2)))
    for k in a:
        torch.testing.assert_close(a[k], b[k])

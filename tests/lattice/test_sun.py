"""SU(N) group and algebra operations: unitarity, Haar moments, the exponential map, projections.

Haar moments used below (derivations in short):
* ⟨tr U⟩ = 0 (the fundamental rep has no invariant vector); ⟨|tr U|²⟩ = 1 (V ⊗ V̄ holds one invariant).
* |tr U|^{2k} is invariant under U → e^{iα}U, so its SU(N) average equals the U(N) one, which is the
  number of permutations of k letters with no increasing subsequence longer than N (Rains 1998):
  ⟨|tr U|⁴⟩ = 2 for every N ≥ 2, and ⟨|tr U|⁸⟩ = 14, 23, 24 for N = 2, 3, ≥ 4 (for SU(2) tr U is real
  and ⟨(tr U)⁸⟩ is the Catalan number C_4 = 14).
* Moments that see the centre: ⟨(tr U)²⟩ = 1 for SU(2) (2 ⊗ 2 ∋ 1) and 0 for N ≥ 3; ⟨(tr U)³⟩ = 1 for
  SU(3) (the ε tensor: 3 ⊗ 3 ⊗ 3 ∋ 1) and 0 for N = 2 and N ≥ 4. A U(N)-Haar sampler fails these.
"""

import math

import numpy as np
import pytest
import torch

from lattice.sun import (
    algebra_coords,
    algebra_from_coords,
    complex_dtype,
    dagger,
    expm_su,
    expm_su2,
    expm_su3,
    gaussian_algebra,
    generators,
    haar,
    project_algebra,
    project_su,
    reunitarize,
    trace,
    unitarity_violation,
)
from observables.gamma import gamma_analysis


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_algebra(shape, n, seed, scale=1.0):
    g = gen(seed)
    z = torch.randn((*shape, n, n), dtype=torch.complex128, generator=g)
    return scale * project_algebra(z)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_haar_matrices_are_special_unitary(n):
    u = haar((50, 3), n, gen(n))
    assert u.shape == (50, 3, n, n) and u.dtype == torch.complex128
    unit, det = unitarity_violation(u)
    assert unit < 1e-12 and det < 1e-12


def test_haar_dtype_mapping_and_reproducibility():
    assert complex_dtype(torch.float64) == torch.complex128
    assert complex_dtype(torch.float32) == torch.complex64
    assert complex_dtype(torch.complex64) == torch.complex64
    u32 = haar((10,), 3, gen(0), dtype=torch.float32)
    assert u32.dtype == torch.complex64
    assert max(unitarity_violation(u32)) < 1e-5
    assert torch.equal(haar((4,), 3, gen(7)), haar((4,), 3, gen(7)))


def within(samples, expected, n_sigma=4.0):
    """|mean − expected| < n_sigma σ with σ from the Gamma method (i.i.d. data: the naive error)."""
    res = gamma_analysis(np.asarray(samples, dtype=np.float64))
    return abs(res.mean - expected) < n_sigma * res.err, (res.mean, res.err, expected)


HAAR_MOMENTS = {  # N: (<(tr U)^2>, <(tr U)^3>)
    2: (1.0, 0.0),
    3: (0.0, 1.0),
    4: (0.0, 0.0),
}


@pytest.mark.parametrize("n", [2, 3, 4])
def test_haar_moments(n):
    tr = trace(haar((20000,), n, gen(100 + n))).numpy()
    a2 = np.abs(tr) ** 2
    sq, cube = HAAR_MOMENTS[n]
    checks = [
        within(tr.real, 0.0), within(tr.imag, 0.0),
        within(a2, 1.0), within(a2**2, 2.0),
        within((tr**2).real, sq), within((tr**3).real, cube), within((tr**3).imag, 0.0),
    ]
    for ok, detail in checks:
        assert ok, detail


@pytest.mark.parametrize("n", [2, 3, 4])
def test_generators_orthonormal_and_coordinates(n):
    t = generators(n)
    assert t.shape == (n * n - 1, n, n)
    gram = torch.einsum("aij,bji->ab", t, t)
    assert torch.allclose(gram, -0.5 * torch.eye(n * n - 1, dtype=gram.dtype), atol=1e-14)
    assert torch.allclose(dagger(t), -t) and trace(t).abs().max() < 1e-14
    x = torch.randn(7, n * n - 1, dtype=torch.float64, generator=gen(1))
    xm = algebra_from_coords(x, n)
    assert torch.allclose(algebra_coords(xm), x, atol=1e-13)
    # −tr X² = ½ Σ x_a² = Σ |X_ij|²
    assert torch.allclose(-trace(xm @ xm).real, 0.5 * (x * x).sum(-1), atol=1e-12)
    assert torch.allclose((xm.abs() ** 2).sum((-2, -1)), 0.5 * (x * x).sum(-1), atol=1e-12)


@pytest.mark.parametrize("n", [2, 3])
def test_project_algebra(n):
    w = torch.randn(20, n, n, dtype=torch.complex128, generator=gen(3))
    p = project_algebra(w)
    assert torch.allclose(dagger(p), -p) and trace(p).abs().max() < 1e-14
    assert torch.allclose(project_algebra(p), p)
    t = generators(n)
    lhs = torch.einsum("aij,bji->ba", t, w).real       # Re tr(T_a W)
    rhs = torch.einsum("aij,bji->ba", t, p).real       # tr(T_a Π(W)), real
    assert torch.allclose(lhs, rhs, atol=1e-13)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_project_su(n):
    u = haar((30,), n, gen(4))
    assert torch.allclose(project_su(u), u, atol=1e-13)
    noisy = u + 1e-3 * torch.randn(u.shape, dtype=u.dtype, generator=gen(5))
    v = project_su(noisy)
    assert max(unitarity_violation(v)) < 1e-12
    assert (v - u).abs().max() < 1e-2


def test_gaussian_algebra_statistics():
    p = gaussian_algebra((4000,), 3, gen(6))
    assert torch.allclose(dagger(p), -p) and trace(p).abs().max() < 1e-13
    x = algebra_coords(p).numpy().ravel()
    for ok, detail in (within(x, 0.0), within(x**2, 1.0)):
        assert ok, detail


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("scale", [0.0, 1e-7, 1e-3, 0.1, 1.0, 5.0])
def test_expm_matches_matrix_exp(n, scale):
    x = random_algebra((40,), n, 10 * n, scale)
    u = expm_su(x)
    ref = torch.linalg.matrix_exp(x)
    assert (u - ref).abs().max() < 1e-12 * max(1.0, scale)
    assert max(unitarity_violation(u)) < 1e-12


def test_expm_su3_special_cases():
    # degenerate spectra (θ = 0 of Morningstar–Peardon), both signs of det Q, and a pure phase
    q = torch.diag(torch.tensor([1.0, 1.0, -2.0], dtype=torch.complex128))
    cases = torch.stack([q, -q, 0.3 * q, torch.diag(torch.tensor([0.5, -0.5, 0.0], dtype=torch.complex128))])
    x = 1j * cases
    assert (expm_su3(x) - torch.linalg.matrix_exp(x)).abs().max() < 1e-13
    x = random_algebra((100,), 3, 11)
    assert torch.allclose(expm_su3(-x), dagger(expm_su3(x)), atol=1e-13)


def test_expm_su2_closed_form():
    x = random_algebra((50,), 2, 12, 3.0)
    theta = torch.sqrt(-0.5 * trace(x @ x).real)
    # exp(X) = cos θ + (sin θ / θ) X, and its trace is 2 cos θ
    assert torch.allclose(trace(expm_su2(x)).real, 2 * torch.cos(theta), atol=1e-13)
    assert (expm_su2(x) - torch.linalg.matrix_exp(x)).abs().max() < 1e-13
    assert math.isclose(float(expm_su2(torch.zeros(2, 2, dtype=torch.complex128))[0, 0].real), 1.0)


def test_expm_complex64():
    x = random_algebra((20,), 3, 13).to(torch.complex64)
    u = expm_su(x)
    assert u.dtype == torch.complex64
    assert (u - torch.linalg.matrix_exp(x)).abs().max() < 1e-5


@pytest.mark.parametrize("n", [2, 3, 4])
def test_reunitarize(n):
    u = haar((30,), n, gen(14))
    noisy = u + 1e-5 * torch.randn(u.shape, dtype=u.dtype, generator=gen(15))
    v = reunitarize(noisy)
    assert max(unitarity_violation(v)) < 1e-8     # one Newton step squares the ~1e-5 deviation
    assert (v - u).abs().max() < 1e-4
    assert (reunitarize(u) - u).abs().max() < 1e-13

"""The free-field formulas against a direct evaluation of the Gaussian integral of Phi4(λ = 0)."""

import numpy as np
import pytest
import torch

from lattice.exact import FreeField
from lattice.scalar import Phi4


def action_matrix(shape, m2):
    """A with S = ½ φᵀAφ, read off Phi4.action by polarisation on unit vectors."""
    theory = Phi4(shape, m2, 0.0)
    v = int(np.prod(shape))
    basis = torch.eye(v, dtype=torch.float64).reshape(v, *shape)
    diag = theory.action(basis)
    pair = theory.action((basis[:, None] + basis[None, :]).reshape(v * v, *shape)).reshape(v, v)
    a = (pair - diag[:, None] - diag[None, :]).numpy()  # S(e_i + e_j) − S(e_i) − S(e_j) = A_ij, i ≠ j
    np.fill_diagonal(a, 2 * diag.numpy())  # S(e_i) = A_ii / 2
    return a


@pytest.mark.parametrize("shape", [(4,), (4, 3), (2, 3, 2)])
def test_free_field_matches_direct_gaussian(shape):
    m2 = 0.7
    a = action_matrix(shape, m2)
    exact = FreeField(shape, m2)
    cov = np.linalg.inv(a)
    v = a.shape[0]
    assert np.allclose(cov, exact.covariance(), atol=1e-12)
    assert np.isclose(np.trace(cov) / v, exact.phi2(), rtol=1e-12)
    assert np.isclose(cov.sum() / v, exact.mag2(), rtol=1e-12)
    log_z = 0.5 * v * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(a)[1]
    assert np.isclose(log_z, exact.log_z(), rtol=1e-12)


def test_free_field_rejects_massless():
    with pytest.raises(ValueError, match="m2 > 0"):
        FreeField((4, 4), 0.0)


def test_exact_samples_have_the_exact_covariance():
    exact = FreeField((4, 3), 0.6)
    x = exact.sample(200_000, np.random.default_rng(1)).reshape(200_000, -1)
    cov = x.T @ x / len(x)
    # each entry estimated from 2e5 samples: σ ≲ sqrt(2) max(var) / sqrt(2e5) ≈ 3e-3 max(var)
    assert np.abs(cov - exact.covariance()).max() < 4 * np.sqrt(2 / 2e5) * exact.covariance().max()

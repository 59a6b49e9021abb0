"""Real/imaginary-part SU(N) products and Wilson force equal the complex ones of lattice.sun/wilson."""

import pytest
import torch

from lattice import sun_real
from lattice.sun import dagger
from lattice.wilson import SUN


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("n", [2, 3, 4])
def test_products_match_complex_matmul(n):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(5, 7, n, n, dtype=torch.complex128, generator=g)
    b = torch.randn(5, 7, n, n, dtype=torch.complex128, generator=g)
    va, vb = torch.view_as_real(a), torch.view_as_real(b)
    for got, want in ((sun_real.mul(va, vb), a @ b), (sun_real.mul_nd(va, vb), a @ dagger(b)),
                      (sun_real.mul_dn(va, vb), dagger(a) @ b)):
        assert _rel(torch.view_as_complex(got.contiguous()), want) < 1e-14


@pytest.mark.parametrize(("shape", "n"), [((4, 6), 2), ((4, 4), 3), ((2, 4, 2), 3), ((2, 2, 4, 2), 3),
                                          ((2, 2, 2, 2), 2)])
def test_force_and_action_match_wilson(shape, n):
    theory = SUN(shape, beta=2.3, N=n)
    u = theory.random_field(3, torch.Generator().manual_seed(11), dtype=torch.float64)
    v = torch.view_as_real(u)
    force = torch.view_as_complex(sun_real.force(v, theory.beta, n).contiguous())
    assert _rel(force, theory.force(u)) < 1e-13
    assert _rel(sun_real.action(v, theory.beta, n), theory.action(u)) < 1e-13

"""SU(N) spectral flows in 4D (and 3D): masks and schedule, exact triangularity (whole-layer log-det
against the brute-force Jacobian), invertibility, gauge equivariance, log_prob = sample's log q, and the
identity flow sampling Haar."""

import itertools

import numpy as np
import pytest
import torch

from flows.masks import layer_masks, layer_schedule, planes
from flows.spectral import SafeEig
from flows.sun.flow import SUNGaugeCoupling, build_sun_flow
from lattice.sun import algebra_coords, algebra_from_coords, dagger, haar, project_algebra, trace
from lattice.wilson import SUN, gauge_transform


def gen(seed):
    return torch.Generator().manual_seed(seed)


def step(x, d, shape):
    y = list(x)
    y[d] = (y[d] + 1) % shape[d]
    return tuple(y)


def plaquette_links(a, b, y, shape):
    """The four links (direction, site) of P_ab(y) = U_a(y) U_b(y+a) U_a(y+b)† U_b(y)†."""
    return [(a, y), (b, step(y, a, shape)), (a, step(y, b, shape)), (b, y)]


@pytest.mark.parametrize("shape", [(4, 4, 4, 4), (4, 2, 8, 4), (4, 4, 4)])
def test_masks_are_triangular_by_enumeration(shape):
    """For every layer of a pass: each active loop P_μν(x) holds exactly one updated link, U_μ(x), and
    every frozen plaquette holds none; the 4·D layers of a pass update every link exactly once."""
    dim = len(shape)
    count = np.zeros((dim, *shape), dtype=int)
    for order in ("increasing", "decreasing"):
        count[:] = 0
        for mu, nu, offset in layer_schedule(dim, 4 * dim, order):
            active, frozen = layer_masks(shape, mu, nu, offset)
            updated = {(mu, x) for x in itertools.product(*map(range, shape)) if active[x]}
            for _, x in updated:
                count[(mu, *x)] += 1
                loop = plaquette_links(mu, nu, x, shape) if mu < nu else plaquette_links(nu, mu, x, shape)
                assert [link for link in loop if link in updated] == [(mu, x)]
            for p, (a, b) in enumerate(planes(dim)):
                for y in itertools.product(*map(range, shape)):
                    touched = any(link in updated for link in plaquette_links(a, b, y, shape))
                    assert bool(frozen[(p, *y)]) == (not touched)
        assert (count == 1).all()


def test_schedule_2d_is_the_row_pattern():
    assert layer_schedule(2, 8) == [(i % 2, 1 - i % 2, (i // 2) % 4) for i in range(8)]
    assert [s[2] for s in layer_schedule(2, 8, "decreasing")] == [0, 0, 3, 3, 2, 2, 1, 1]
    planes_seen = {(mu, nu) for mu, nu, _ in layer_schedule(4, 48)}
    assert planes_seen == {(mu, nu) for mu in range(4) for nu in range(4) if mu != nu}
    with pytest.raises(ValueError):
        layer_masks((4, 5, 4, 4), 0, 1, 0)


@pytest.mark.parametrize("n, shape, order", [(2, (4, 4, 4, 4), "increasing"), (3, (4, 4, 2, 2), "decreasing"),
                                             (3, (4, 4, 4), "increasing")])
def test_flow_is_invertible_equivariant_and_consistent(n, shape, order, check_invertible, perturbed_flow):
    th = SUN(shape, 6.0, n)
    flow = perturbed_flow(th, 20 + n, 0.02, n_layers=4 * len(shape), offset_order=order)
    x, logq = flow.sample(2, gen(1))
    assert x.shape == (2, *th.field_shape) and x.dtype == torch.complex128
    assert logq.abs().min() > 1e-2                                     # not the identity
    z = check_invertible(flow, x, logq, 1e-10)
    g = haar((2, *shape), n, gen(2))
    gx = gauge_transform(x, g)
    assert (flow.log_prob(gx) - logq).abs().max() < 1e-10
    gy, _ = flow.push(gauge_transform(z, g))
    assert (gauge_transform(x, g) - gy).abs().max() < 1e-10            # f(g·U) = g·f(U), whole flow


@pytest.mark.parametrize("mu, nu, offset", [(1, 0, 1), (0, 1, 0), (3, 0, 3)])
def test_layer_log_det_against_full_jacobian_4d(mu, nu, offset, monkeypatch, perturbed_flow):
    """The log|det| of one 4D coupling layer against the brute-force Jacobian in left-invariant
    coordinates of all 4·32·3 link coordinates of SU(2) on 4×2×2×2: checks exact triangularity."""
    monkeypatch.setattr(SafeEig, "ETA", 1e-30)                 # exact eigenvector gradients
    shape = (4, 2, 2, 2)
    th = SUN(shape, 2.0, 2)
    flow = perturbed_flow(th, 50, 0.02, n_layers=0, offset_order="increasing")
    layer = SUNGaugeCoupling(shape, 2, mu, nu, offset, flow.config).to(torch.float64)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.3 * torch.randn(p.shape, dtype=p.dtype, generator=gen(52)))
    layer.requires_grad_(False)
    u0 = th.random_field(1, gen(51))
    y0, logdet = layer(u0)
    n_coords = 4 * 32 * 3

    def coords(x):
        u = torch.linalg.matrix_exp(algebra_from_coords(x.reshape(1, 4, *shape, 3), 2)) @ u0
        return algebra_coords(project_algebra(layer(u)[0] @ dagger(y0))).flatten()

    zero = torch.zeros(n_coords, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(coords, zero, vectorize=True)
    assert abs(float(torch.linalg.slogdet(jac)[1]) - float(logdet)) < 1e-9
    assert abs(float(logdet)) > 1e-2


def test_new_4d_flow_is_identity_and_samples_haar():
    th = SUN((4, 4, 4, 4), 6.0, 3)
    flow = build_sun_flow(th, {"n_layers": 16})
    assert len(flow.layers) == 16 and flow.dtype == torch.complex64
    x, logq = flow.sample(2, gen(3))
    assert logq.abs().max() < 1e-4
    tr = trace(x.to(torch.complex128)).flatten()                       # 2·4·256 = 2048 Haar links
    assert abs(complex(tr.mean())) < 4 / np.sqrt(tr.numel())            # ⟨tr U⟩ = 0, var |tr U|² = 1
    assert abs(float((tr.abs() ** 2).mean()) - 1.0) < 4 * np.sqrt(1.0 / tr.numel())  # ⟨|tr U|⁴⟩ = 2
    plaq = th.observables(x)["plaquette"]
    assert plaq.abs().max() < 0.05

"""SU(N) spectral gauge-equivariant flows: geometry of the alcove, invertibility, the Haar Jacobian
(per spectral map and per whole layer), gauge equivariance, exact reweighting against the 2D character
expansion, and training."""

import numpy as np
import pytest
import torch

from flows.spectral import (
    alcove_to_sticks,
    conjugation_update,
    eigen_alcove,
    log_haar_density,
    spectral_map,
    sticks_to_alcove,
)
from flows.sun.flow import SUNFlowConfig, build_sun_flow
from flows.train import TrainConfig, train_flow
from flows.transforms import spline_n_params
from lattice.exact_sun import plaquette as exact_plaquette
from lattice.sun import (
    algebra_coords,
    algebra_from_coords,
    dagger,
    haar,
    project_algebra,
    unitarity_violation,
)
from lattice.wilson import SUN, gauge_transform


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def exact_eig(monkeypatch):
    """Autograd through the eigendecomposition without ``SafeEig``'s broadening (relative O(1e-6) at
    Haar-typical gaps), for reference Jacobians that must be exact to 1e-9."""
    from flows.spectral import SafeEig

    monkeypatch.setattr(SafeEig, "ETA", 1e-30)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_eigen_alcove(n):
    w = haar((300,), n, gen(n))
    theta, v = eigen_alcove(w)
    rebuilt = v @ torch.diag_embed(torch.exp(1j * theta).to(w.dtype)) @ torch.linalg.inv(v)
    assert (rebuilt - w).abs().max() < 1e-12
    assert theta.sum(-1).abs().max() < 1e-12
    assert bool((theta[:, :-1] >= theta[:, 1:]).all())
    assert bool((theta[:, 0] - theta[:, -1] <= 2 * np.pi).all())
    b = alcove_to_sticks(theta)
    assert bool(((b >= 0) & (b <= 1)).all())
    assert (sticks_to_alcove(b) - theta).abs().max() < 1e-12
    # centre elements sit at alcove vertices: for e^{2πi/N} 1 one stick fraction is 1, the others 0
    z = torch.exp(torch.tensor(2j * np.pi / n)) * torch.eye(n, dtype=torch.complex128)
    sticks = alcove_to_sticks(eigen_alcove(z[None])[0])
    assert torch.allclose(sticks.sort().values, torch.tensor([0.0] * (n - 2) + [1.0], dtype=torch.float64))


def test_haar_density_normalisation_su2():
    """∫_0^π (2/π) sin²θ dθ = 1: |Δ|² = 4 sin²θ with the Weyl factor 1/(2·2π), θ ∈ (0, 2π) ↔ [0, π]."""
    theta = torch.linspace(0, np.pi, 20001, dtype=torch.float64)
    dens = torch.exp(log_haar_density(torch.stack([theta, -theta], -1)))
    assert abs(float(torch.trapezoid(dens, theta)) / (2 * np.pi) - 1.0) < 1e-6


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("k_basis", [None, 3])
def test_spectral_map_jacobian_against_autograd(n, k_basis, exact_eig):
    """log|det| of W ↦ h(W) w.r.t. Haar equals the log-determinant of the Jacobian in left-invariant
    coordinates: x ↦ coords of Π(h(e^X W) h(W)†) at X = 0 (dU = d^{N²−1}x locally); for sticks moved
    each on its own (params (1, N−1, P)) and autoregressively (params (1, N−1, K, P))."""
    g = gen(10 + n)
    w0 = haar((1,), n, g)
    shape = (1, n - 1, spline_n_params(4)) if k_basis is None else (1, n - 1, k_basis, spline_n_params(4))
    params = torch.randn(*shape, dtype=torch.float64, generator=g)

    def h(w):
        theta, v = eigen_alcove(w)
        theta_new, logdet = spectral_map(theta, params)
        return conjugation_update(v, theta_new - theta) @ w, logdet

    w1, logdet = h(w0)
    assert max(unitarity_violation(w1)) < 1e-12

    def coords(x):
        moved = h(torch.linalg.matrix_exp(algebra_from_coords(x, n)) @ w0)[0]
        return algebra_coords(project_algebra(moved[0] @ dagger(w1[0])))

    jac = torch.autograd.functional.jacobian(coords, torch.zeros(n * n - 1, dtype=torch.float64))
    assert abs(float(torch.linalg.slogdet(jac)[1]) - float(logdet)) < 1e-9
    theta0 = eigen_alcove(w0)[0]
    back, logdet_inv = spectral_map(spectral_map(theta0, params)[0], params, inverse=True)
    assert (back - theta0).abs().max() < 1e-10 and abs(float(logdet + logdet_inv)) < 1e-9


@pytest.mark.parametrize("n, k_basis", [(2, 1), (3, 1), (3, 2)])
def test_flow_is_invertible_and_equivariant(n, k_basis, check_invertible, perturbed_flow):
    th = SUN((4, 4), 2.0, n)
    flow = perturbed_flow(th, 20 + n, 0.05, n_layers=8, stick_basis=k_basis)
    x, logq = flow.sample(3, gen(1))
    assert x.dtype == torch.complex128 and logq.dtype == torch.float64
    assert max(unitarity_violation(x)) < 1e-11
    assert logq.abs().min() > 1e-2                      # the flow is not the identity
    check_invertible(flow, x, logq, 1e-9)
    g = haar((3, 4, 4), n, gen(2))
    gx = gauge_transform(x, g)
    assert (flow.log_prob(gx) - logq).abs().max() < 1e-9
    y, _ = flow.layers[0](x)
    gy, _ = flow.layers[0](gx)
    assert (gauge_transform(y, g) - gy).abs().max() < 1e-10


@pytest.mark.parametrize("layer_index", [0, 3])
def test_layer_log_det_against_full_jacobian(layer_index, exact_eig, perturbed_flow):
    """The log|det| of a whole coupling layer (all 2·16·3 link coordinates of SU(2) on 4×4) against the
    brute-force Jacobian in left-invariant coordinates: checks the masks (triangularity) as well."""
    th = SUN((4, 4), 1.0, 2)
    layer = perturbed_flow(th, 50, 0.1, n_layers=8).layers[layer_index]
    layer.requires_grad_(False)
    u0 = th.random_field(1, gen(51))
    y0, logdet = layer(u0)

    def coords(x):
        u = torch.linalg.matrix_exp(algebra_from_coords(x.reshape(1, 2, 4, 4, 3), 2)) @ u0
        return algebra_coords(project_algebra(layer(u)[0] @ dagger(y0))).flatten()

    jac = torch.autograd.functional.jacobian(coords, torch.zeros(2 * 16 * 3, dtype=torch.float64))
    assert abs(float(torch.linalg.slogdet(jac)[1]) - float(logdet)) < 1e-9
    assert abs(float(logdet)) > 1e-2


def test_new_flow_is_identity_and_config():
    th = SUN((4, 4), 1.0, 3)
    flow = build_sun_flow(th, {"n_layers": 2, "coupling": "spline"})
    assert flow.dtype == torch.complex64
    x, logq = flow.sample(2, gen(3))
    assert x.shape == (2, *th.field_shape) and logq.abs().max() < 1e-5
    assert SUNFlowConfig.from_mapping({"bins": 4}).to_dict()["bins"] == 4
    with pytest.raises(ValueError):
        SUNFlowConfig.from_mapping({"wrong": 1})
    with pytest.raises(ValueError):
        build_sun_flow(SUN((4, 4, 4, 4, 4), 1.0, 3))          # D = 5 has no conditioner
    with pytest.raises(ValueError):
        SUNFlowConfig.from_mapping({"offset_order": "sideways"})


def test_reweighted_flow_samples_are_exact(perturbed_flow):
    """Self-normalised importance sampling with a (random, non-trivial) flow reproduces the exact 4×4 SU(2)
    plaquette at β = 1, although the raw flow samples are far from it: log q is the true density."""
    beta, shape = 1.0, (4, 4)
    th = SUN(shape, beta, 2)
    x, logq = perturbed_flow(th, 40, 0.05, n_layers=8).sample(1500, gen(41))
    logw = (-th.action(x) - logq).numpy()
    w = np.exp(logw - logw.max())
    plaq = th.observables(x)["plaquette"].numpy()
    est = (w * plaq).sum() / w.sum()
    err = np.sqrt(((w * (plaq - est)) ** 2).sum()) / w.sum()         # delta method for the ratio
    exact = exact_plaquette(2, beta, shape)
    assert abs(est - exact) < 4 * err, (est, err, exact)
    assert abs(plaq.mean() - exact) > 10 * plaq.std() / np.sqrt(len(plaq))


def test_training_lowers_the_reverse_kl():
    th = SUN((4, 4), 2.0, 2)
    flow = build_sun_flow(th, {"n_layers": 2, "hidden": [8]}, generator=gen(30))

    def kl_estimate():
        with torch.no_grad():
            x, logq = flow.float().forward_with_logq(256, gen(60))
            return float((logq + th.action(x)).mean())

    before = kl_estimate()
    train_flow(flow, th, TrainConfig(steps=12, batch_size=32, lr=1e-2), gen(31), progress=False)
    assert kl_estimate() < before - 0.3


def test_safe_eig_backward_matches_torch_away_from_degeneracy(exact_eig):
    from flows.spectral import SafeEig

    g = gen(80)
    for n in (2, 3):
        w = haar((5,), n, g).requires_grad_()
        gl = torch.randn(5, n, dtype=torch.complex128, generator=g)
        gv = torch.randn(5, n, n, dtype=torch.complex128, generator=g)

        def loss(lam, v, gl=gl, gv=gv):          # depends on V only through V D V^{-1} (gauge invariant)
            conj = v @ torch.diag_embed(gl) @ torch.linalg.inv(v)
            return (lam * gl.conj()).real.sum() + (conj * gv).real.sum()

        ref = torch.autograd.grad(loss(*torch.linalg.eig(w)), w)[0]
        got = torch.autograd.grad(loss(*SafeEig.apply(w)), w)[0]
        assert (got - ref).abs().max() < 1e-10 * ref.abs().max()


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_at_degenerate_spectra(n, dtype):
    """The spectral map's gradients w.r.t. the loop and the spline parameters are finite and bounded at an
    exactly degenerate spectrum (W = 1, W = e^{2πi/N} 1) and at nearly degenerate ones (W = e^{εX})."""
    from lattice.sun import complex_dtype

    g = gen(90 + n)
    cdtype = complex_dtype(dtype)
    centre = torch.exp(torch.tensor(2j * np.pi / n)) * torch.eye(n, dtype=torch.complex128)
    for eps, shift in [(0.0, None), (0.0, centre), (1e-9, None), (1e-6, None), (1e-4, centre)]:
        x = (eps * torch.randn(4, n * n - 1, dtype=torch.float64, generator=g)).to(dtype).requires_grad_()
        params = (0.3 * torch.randn(4, n - 1, spline_n_params(4), dtype=torch.float64, generator=g))
        params = params.to(dtype).requires_grad_()
        w = torch.linalg.matrix_exp(algebra_from_coords(x, n, cdtype))
        if shift is not None:
            w = shift.to(cdtype) @ w
        theta, v = eigen_alcove(w)
        theta_new, logdet = spectral_map(theta, params)
        moved = conjugation_update(v, theta_new - theta) @ w
        loss = (moved * haar((4,), n, g, cdtype)).real.sum() + logdet.sum()
        grads = torch.autograd.grad(loss, (x, params))
        for grad in grads:
            assert bool(torch.isfinite(grad).all()), (eps, dtype)
            assert grad.abs().max() < 1e4, (eps, dtype, grad.abs().max())

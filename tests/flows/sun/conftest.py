"""Shared checks of the SU(N) flow tests, handed out as fixtures (the tests import in pytest's
``importlib`` mode, where a test module cannot import ``conftest``)."""

import pytest


def _check_invertible(flow, x, logq, tol):
    """``log_prob`` of sampled links ``x`` is their ``logq``, and pulling ``x`` back through the inverse
    layers then pushing it forward again gives ``x`` and ``logq`` back, all to ``tol``. Returns the pulled
    back prior draws z."""
    assert (flow.log_prob(x) - logq).abs().max() < tol
    z = x
    for layer in reversed(flow.layers):
        z, _ = layer.inverse(z)
    x_again, logq_again = flow.push(z)
    assert (x_again - x).abs().max() < tol and (logq_again - logq).abs().max() < tol
    return z


def _perturbed_flow(theory, seed, scale, **config):
    """A float64 SU(N) flow of ``config`` (hidden [4] unless given) whose weights are all perturbed by
    ``scale`` · N(0, 1), so it is not the identity (4D conditioners have a large fan-in: there 0.05
    already gives log q ≈ 700 and amplifies round-off to 1e-8, so 4D tests take 0.02)."""
    import torch

    from flows.sun.flow import build_sun_flow

    flow = build_sun_flow(theory, {"hidden": [4], **config}, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
    with torch.no_grad():
        for p in flow.parameters():  # each from a fresh generator seeded seed + 1
            noise = torch.Generator().manual_seed(seed + 1)
            p.add_(scale * torch.randn(p.shape, dtype=p.dtype, generator=noise))
    return flow


@pytest.fixture
def perturbed_flow():
    """``perturbed_flow(theory, seed, scale, **config)``: a float64 SU(N) flow that is not the identity."""
    return _perturbed_flow


@pytest.fixture
def check_invertible():
    """``check_invertible(flow, x, logq, tol) -> z``: the flow's inverse and density agree with its
    samples."""
    return _check_invertible

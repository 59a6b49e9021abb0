"""Exactness over seeds: 50 short chains, each with its own seed, on the free field (λ = 0), whose
⟨φ²⟩ is known exactly. Each chain gives z = (mean − exact) / err with its own Gamma-method error; if the
sampler is exact and the errors are right, the z are N(0, 1): Kolmogorov–Smirnov p > 0.001 and a
spread std(z) in [0.7, 1.4] (errors neither too small nor too large). Independence Metropolis runs on a
deliberately mediocre proposal (the free field's Gaussian 25% too wide: acceptance about 0.38), and
its all-proposal reweighted estimate is tested the same way; HMC likewise. A proposal whose reported
log q is wrong must fail the same test.
"""

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from lattice.exact import FreeField
from lattice.scalar import Phi4
from mcmc.kernels.hmc import HMC
from mcmc.kernels.independence import IndependenceMetropolis
from observables.estimators import reweighted_mean
from observables.gamma import gamma_analysis

SHAPE, M2 = (4, 4), 1.0
EXACT = FreeField(SHAPE, M2).phi2()
SEEDS = range(50)
WIDTH = 1.25  # the proposal is the free field's own Gaussian, 25% too wide: acceptance about 0.38


class WideGaussian:
    """q = N(0, c² A⁻¹) with A the Hessian of the free action: the target c times too wide (bounded
    weights). ``reported``: the width whose density ``log_prob`` returns (c: correct)."""

    dtype, device = torch.float64, torch.device("cpu")

    def __init__(self, theory, c, reported=None):
        self.shape = theory.field_shape
        v = int(np.prod(self.shape))
        hess = torch.autograd.functional.hessian(
            lambda f: theory.action(f.reshape(1, *self.shape))[0], torch.zeros(v, dtype=torch.float64))
        cov = torch.linalg.inv(hess)
        self.chol = c * torch.linalg.cholesky(cov)
        self.density = torch.distributions.MultivariateNormal(
            torch.zeros(v, dtype=torch.float64), covariance_matrix=(reported or c) ** 2 * cov)

    def log_prob(self, x):
        return self.density.log_prob(x.flatten(1))

    def sample(self, n, generator):
        z = torch.randn((n, self.chol.shape[0]), generator=generator, dtype=torch.float64)
        x = (z @ self.chol.T).reshape(n, *self.shape)
        return x, self.log_prob(x)


def _independence_z(reported=None, n_buffers=4):
    """Per seed, one chain of 512 × ``n_buffers`` updates advanced a whole buffer at a time."""
    theory = Phi4(SHAPE, M2, 0.0)
    flow = WideGaussian(theory, WIDTH, reported)
    kernel = IndependenceMetropolis(theory, flow, batch=512)
    z_chain, z_rw, acc = [], [], []
    for seed in SEEDS:
        gen = torch.Generator().manual_seed(1000 + seed)
        state = kernel.init_from_flow(1, gen)
        phi2, prop, logw, accepted = [], [], [], []
        for _ in range(n_buffers):
            state, info, x_rows, _ = kernel.steps(state, gen)
            phi2.append((x_rows * x_rows).flatten(2).mean(2)[:, 0])
            prop.append(info.proposal_obs["phi2"][:, 0])
            logw.append(info.proposal_logw[:, 0])
            accepted.append(info.accepted[:, 0])
        res = gamma_analysis(torch.cat(phi2)[20:].numpy())  # 20 updates of thermalisation
        rw = reweighted_mean(torch.cat(prop).numpy(), torch.cat(logw).numpy(), n_bins=50)
        z_chain.append((res.mean - EXACT) / res.err)
        z_rw.append((rw.mean - EXACT) / rw.err)
        acc.append(float(torch.cat(accepted).double().mean()))
    return np.array(z_chain), np.array(z_rw), float(np.mean(acc))


def _consistent_with_normal(z):
    return kstest(z, "norm").pvalue > 0.001 and 0.7 <= z.std() <= 1.4


def test_independence_metropolis_and_reweighting_are_exact_over_seeds():
    z_chain, z_rw, acc = _independence_z()
    assert 0.2 < acc < 0.7, acc  # mediocre, as intended
    assert _consistent_with_normal(z_chain), (kstest(z_chain, "norm").pvalue, z_chain.std())
    assert _consistent_with_normal(z_rw), (kstest(z_rw, "norm").pvalue, z_rw.std())


def test_a_wrong_log_q_fails_the_same_test():
    z_chain, z_rw, _ = _independence_z(reported=1.1 * WIDTH, n_buffers=2)
    assert not _consistent_with_normal(z_chain) and not _consistent_with_normal(z_rw)


def test_hmc_is_exact_over_seeds():
    theory = Phi4(SHAPE, M2, 0.0)
    kernel = HMC(theory, tau=0.6, n_steps=2, integrator="leapfrog")
    z = []
    for seed in SEEDS:
        gen = torch.Generator().manual_seed(2000 + seed)
        state = kernel.init(torch.randn(1, *SHAPE, generator=gen, dtype=torch.float64))
        for _ in range(20):
            state, _ = kernel.step(state, gen)
        phi2 = []
        for _ in range(300):
            state, _ = kernel.step(state, gen)
            phi2.append(float(theory.observables(state.x)["phi2"][0]))
        res = gamma_analysis(np.array(phi2))
        z.append((res.mean - EXACT) / res.err)
    z = np.array(z)
    assert _consistent_with_normal(z), (kstest(z, "norm").pvalue, z.std())


@pytest.mark.parametrize("z", [np.full(50, 0.5), np.random.default_rng(0).normal(0, 2.0, 50)])
def test_the_criterion_rejects_biased_or_misjudged_errors(z):
    assert not _consistent_with_normal(z)

"""Flow-based MCMC for SU(N): a briefly trained spectral flow, corrected by independence Metropolis,
reproduces the exact 2D plaquette (character expansion, ``lattice.exact_sun``) for SU(2) and SU(3) at
L = 8, β = 2, and HMC's plaquette in 4D. Errors are Gamma-method errors (each chain a replica);
tolerances are 4σ, with a check that σ is small enough for the comparison to have teeth."""

import math

import numpy as np
import pytest
import torch

from flows.sun.flow import build_sun_flow
from flows.train import TrainConfig, train_flow
from lattice.exact_sun import plaquette as exact_plaquette
from lattice.wilson import SUN
from mcmc.kernels.hmc import HMC
from mcmc.kernels.independence import IndependenceMetropolis
from observables.gamma import gamma_analysis


def trained_flow_chain(theory, run_chain, seed, layers, train_steps, lr, n_chains, n_therm, n_meas, batch):
    gen = torch.Generator().manual_seed(seed)
    config = {"n_layers": layers, "hidden": [8], "bins": 4, "offset_order": "decreasing"}
    flow = build_sun_flow(theory, config, generator=gen)
    result = train_flow(flow, theory, TrainConfig(steps=train_steps, batch_size=batch, lr=lr), gen,
                        progress=False)
    assert result.n_skipped == 0
    kernel = IndependenceMetropolis(theory, flow.as_float64(), batch=64)
    return run_chain(kernel, kernel.init_from_flow(n_chains, gen), gen, n_therm=n_therm, n_meas=n_meas)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_flow_metropolis_reproduces_exact_2d_plaquette(n, run_chain):
    theory = SUN((8, 8), 2.0, n)
    chain = trained_flow_chain(theory, run_chain, 60 + n, layers=8, train_steps=60, lr=3e-3,
                               n_chains=16, n_therm=20, n_meas=160, batch=32)
    assert np.mean(chain.info["accepted"]) > 0.1                          # the flow has learned something
    res = gamma_analysis(chain.obs["plaquette"])
    exact = exact_plaquette(n, 2.0, (8, 8))
    assert abs(res.mean - exact) < 4 * res.err, (res.mean, res.err, exact)
    assert res.err < 0.01


@pytest.mark.slow
def test_flow_metropolis_agrees_with_hmc_4d(run_chain):
    """4D SU(3) on 2⁴ at β = 1: flow-MH and HMC plaquettes agree within 4σ (and differ from the Haar value 0).
    At β = 2 a 40-step flow accepts ≈ 2 % and 240 steps per chain do not equilibrate (τ_int ≈ 50)."""
    theory = SUN((2, 2, 2, 2), 1.0, 3)
    chain = trained_flow_chain(theory, run_chain, 70, layers=16, train_steps=40, lr=5e-4,
                               n_chains=16, n_therm=30, n_meas=200, batch=32)
    assert np.mean(chain.info["accepted"]) > 0.2
    flow_res = gamma_analysis(chain.obs["plaquette"])
    gen = torch.Generator().manual_seed(71)
    hmc = run_chain(HMC(theory, 1.0, 4, "omelyan"), theory.random_field(16, gen), gen, n_therm=20, n_meas=150)
    hmc_res = gamma_analysis(hmc.obs["plaquette"])
    sigma = math.hypot(flow_res.err, hmc_res.err)
    assert abs(flow_res.mean - hmc_res.mean) < 4 * sigma, (flow_res, hmc_res)
    assert flow_res.mean > 8 * sigma                                       # ⟨P⟩ ≈ β/18 ≈ 0.056 ≠ 0

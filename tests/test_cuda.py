"""Every sampler kind on every theory on CUDA (marker ``cuda``; skipped without a GPU).

Each case runs the whole replica path (card → kernel → driver → HDF5 file) for a few updates:

* twice on the GPU with the same seed: the stored configurations must be bit-identical. torch's
  deterministic mode is on (``torch.use_deterministic_algorithms(True, warn_only=True)``, cuBLAS
  workspace ``:4096:8``); an op without a deterministic CUDA kernel would only warn, and the
  bit-identity check would then catch it;
* once on the CPU: every in-stream observable must agree within 4σ (Gamma-method errors of both runs,
  chains as replicas). CPU and GPU draw from different random streams, so the two runs are independent
  samples of the same Markov-chain law (a flow with ``train.steps: 0`` is the same flow on both devices,
  because initial weights are drawn on the CPU from the seed).

The local kernels run on the CPU only (numba): with ``device: auto`` they fall back to the CPU, and an
explicit ``device: cuda`` is refused with a one-line error. Flow training on CUDA (a few steps) must
be reproducible too.
"""

import os

import h5py
import numpy as np
import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

NO_CUDA = "no CUDA device (runs/bench/gpu_check.sh runs these)"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]

THEORIES = {
    "phi4": {"name": "phi4", "shape": [8, 8], "m2": -4.0, "lam": 8.0},
    "u1": {"name": "u1", "shape": [8, 8], "beta": 2.0},
    "su2_2d": {"name": "sun", "shape": [4, 4], "beta": 2.0, "N": 2},
    "su3_2d": {"name": "sun", "shape": [4, 4], "beta": 2.0, "N": 3},
    "su2_4d": {"name": "sun", "shape": [2, 2, 2, 2], "beta": 2.0, "N": 2},
    "su3_4d": {"name": "sun", "shape": [2, 2, 2, 2], "beta": 5.0, "N": 3},
}
FLOWS = {  # the constructed flows: U(1) sweep flow and the SU(3) Wilson start
    "u1_sweep": ("u1", {"sweep": True, "init": "wilson", "n_layers": 0, "hidden": [4]}),
    "su3_4d_wilson": ("su3_4d", {"init": "wilson", "n_layers": 8, "hidden": [4]}),
}
CASES = [(t, k, None) for t in THEORIES for k in ("hmc", "flow", "local")]
CASES += [(t, "flow", f) for f, (t, _) in FLOWS.items()]


@pytest.fixture(autouse=True)
def deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def _card(theory, kind, flow, device, out):
    from mcmc.card import Card

    card = {
        "theory": THEORIES[theory], "sampler": {"kind": kind}, "hmc": {"tau": 0.5, "n_steps": 5},
        "train": {"steps": 0}, "flow": FLOWS[flow][1] if flow else {"n_layers": 4, "hidden": [4]},
        "sample": {"n_configs": 40, "n_therm": 10, "n_chains": 16, "proposal_batch": 256, "progress": False},
        "seed": 7, "out": str(out), "device": device, "dtype": "float64",
    }
    return Card.model_validate(card)


def _run(card):
    from mcmc.job import sample_replica
    from mcmc.setup import job_plan

    outcome = sample_replica(job_plan(card), progress=False)
    with h5py.File(outcome.path, "r") as h5:
        return h5["configs"][...], {k: h5["obs"][k][...] for k in h5["obs"]}


def _agree(a, b, name):
    from observables.gamma import gamma_analysis

    ra, rb = gamma_analysis(a), gamma_analysis(b)
    sigma = float(np.hypot(ra.err, rb.err))
    if sigma == 0.0:
        assert ra.mean == rb.mean, name
        return
    assert abs(ra.mean - rb.mean) < 4 * sigma, f"{name}: GPU {ra.mean} ± {ra.err}, CPU {rb.mean} ± {rb.err}"


@pytest.mark.parametrize(("theory", "kind", "flow"), CASES, ids=lambda v: str(v))
def test_sampler_on_cuda_is_reproducible_and_agrees_with_the_cpu(theory, kind, flow, tmp_path):
    device = "auto" if kind == "local" else "cuda"
    configs_a, obs_a = _run(_card(theory, kind, flow, device, tmp_path / "a"))
    configs_b, _ = _run(_card(theory, kind, flow, device, tmp_path / "b"))
    assert np.array_equal(configs_a, configs_b)
    if kind == "local":
        return  # the CPU run is this run
    _, obs_cpu = _run(_card(theory, kind, flow, "cpu", tmp_path / "cpu"))
    assert obs_a.keys() == obs_cpu.keys()
    for name in obs_a:
        _agree(obs_a[name], obs_cpu[name], name)


def test_local_updates_refuse_an_explicit_cuda_device(tmp_path):
    from mcmc.card import CardError
    from mcmc.setup import job_plan

    card = _card("phi4", "local", None, "cuda", tmp_path)
    with pytest.raises(CardError, match="CPU only"):
        job_plan(card)


@pytest.mark.parametrize("theory", ["phi4", "u1", "su3_2d"])
def test_flow_training_on_cuda_is_reproducible(theory):
    """A few training steps on the GPU from one seed give the same weights twice; initial weights equal
    the CPU's."""
    from flows.registry import flow_family
    from flows.train import TrainConfig, train_flow
    from lattice.theories import theory_from_params

    th = theory_from_params(THEORIES[theory])
    family = flow_family(th.name)
    weights = []
    for device in ("cuda", "cuda", "cpu"):
        g = torch.Generator(device=device).manual_seed(5)
        flow = family.build(th, {"n_layers": 4, "hidden": [4]}, generator=g, device=device)
        start = {k: v.detach().cpu().clone() for k, v in flow.state_dict().items()}
        if device == "cuda":
            train_flow(flow, th, TrainConfig.from_mapping({"steps": 5, "batch_size": 32}), g, progress=False)
        weights.append((start, {k: v.detach().cpu() for k, v in flow.state_dict().items()}))
    (s0, w0), (s1, w1), (s_cpu, _) = weights
    assert all(torch.equal(s0[k], s_cpu[k]) for k in s0)  # same seed, same initial weights everywhere
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(not torch.equal(w0[k], s0[k]) for k in w0)  # training moved the weights


@pytest.mark.parametrize("theory", ["phi4", "su3_4d"])
def test_compiled_hmc_on_cuda_matches_eager(theory):
    """The fused trajectory (torch.compile; CUDA graphs for real fields) is the eager one to rounding."""
    from lattice.theories import theory_from_params
    from mcmc.kernels.compiled import CompiledHMC, compile_available
    from mcmc.kernels.hmc import HMC, dynamics_for

    reason = compile_available(torch.device("cuda"))
    if reason is not None:
        pytest.skip(reason)
    th = theory_from_params(THEORIES[theory])
    g = torch.Generator(device="cuda").manual_seed(1)
    x = (th.random_field(8, g, dtype=torch.float64, device="cuda") if hasattr(th, "random_field")
         else torch.randn((8, *th.field_shape), generator=g, dtype=torch.float64, device="cuda"))
    p = dynamics_for(th).momentum(x, g)
    want = HMC(th, 0.5, 4).trajectory(x, p)
    for _ in range(3):  # graph warm-up, recording and replay
        got = CompiledHMC(th, 0.5, 4).trajectory(x, p)
    assert got.n_force == want.n_force
    for a, b in zip(got[:3], want[:3], strict=True):  # x, p and the force at x
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12


def test_gradient_flow_on_cuda_matches_the_cpu():
    """Wilson flow of the same 4D SU(3) links on both devices: t, E, t²E and Q agree (its history's ``t``
    lives on the links' device)."""
    from lattice.gradflow import wilson_flow
    from lattice.wilson import SUN

    theory = SUN((4, 4, 4, 4), beta=6.0, N=3)
    u = theory.random_field(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    _, cpu = wilson_flow(u, t_max=0.2, eps=0.05)
    _, gpu = wilson_flow(u.to("cuda"), t_max=0.2, eps=0.05)
    assert gpu.t.device.type == "cuda"
    for name in ("t", "E", "t2E", "Q"):
        assert torch.allclose(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=1e-10, atol=1e-10), name

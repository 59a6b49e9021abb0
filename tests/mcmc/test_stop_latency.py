"""A stop request takes effect within a bounded time however slow a proposal is, and the stopped run
resumes bit-identically (issue 14, item 7).

The proposal sleeps 2 ms per sample, so the old fixed buffer (1024 proposals per chain, 4 chains) would
take over 8 s to refill in one flow call; with the 0.18 s refill budget a refill takes about 0.13 s.
The kernel times its first refill on a virtual clock that the proposal advances by exactly its sleep,
so that the chosen chunk (16 rows) and hence the chain do not depend on the machine's load.
"""

import threading
import time

import h5py
import numpy as np
import torch

from mcmc.driver import Position, Schedule, run_chain, state_from_dict, state_to_dict
from mcmc.io.store import EnsembleWriter
from mcmc.kernels.independence import IndependenceMetropolis
from tests.mcmc.kernels.test_independence import Gaussian, GaussianProposal

SLEEP = 0.002  # seconds per proposal
N_CHAINS, BATCH, BUDGET = 4, 1024, 0.18
BOUND = 1.0  # seconds from the stop request to the return of run_chain


class SleepyProposal(GaussianProposal):
    """Sleeps ``SLEEP`` per sample, and advances ``virtual`` by exactly that."""

    def __init__(self):
        super().__init__((3,), s=1.3, sleep=SLEEP)
        self.virtual = 0.0

    def sample(self, n, generator):
        self.virtual += SLEEP * n
        return super().sample(n, generator)


def _kernel():
    flow = SleepyProposal()
    return IndependenceMetropolis(Gaussian((3,), sigma=0.8), flow, batch=BATCH, refill_seconds=BUDGET,
                                  clock=lambda: flow.virtual)


def _run(path, kernel, state, gen, start=None, stop=lambda: False, n_rows=0):
    start, saved = start or Position(), {}

    def checkpoint(st, pos, _spent):
        saved.update(state=state_to_dict(st), generator=gen.get_state(), position=pos)

    if start.update == 0:
        writer = EnsembleWriter.create(path, field_shape=(3,), n_chains=N_CHAINS, field_dtype="float64",
                                       obs_names=["phi2"], attrs={}, proposal_obs_names=("phi2",))
    else:
        writer = EnsembleWriter.reopen(path, n_rows)
    result = run_chain(kernel, state, gen, schedule=Schedule(0, 400, 1, block=50),
                       measure=kernel.theory.observables, writer=writer, start=start, on_block=checkpoint,
                       stop_requested=stop, progress=False)
    writer.close(complete=not result.interrupted)
    return result, saved


def _read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("configs", "accepted", "proposal_logw", "proposal_obs/phi2", "traj")}


def test_stop_is_prompt_and_the_run_resumes_bit_identically(tmp_path):
    assert BATCH * N_CHAINS * SLEEP > 8 * BOUND  # what one refill of the old fixed buffer would take
    kernel = _kernel()
    gen = torch.Generator().manual_seed(11)
    flag, asked = threading.Event(), []

    def ask():
        asked.append(time.monotonic())
        flag.set()

    timer = threading.Timer(1.0, ask)
    timer.start()
    result, saved = _run(tmp_path / "a.h5", kernel, kernel.init_from_flow(N_CHAINS, gen), gen,
                         stop=flag.is_set)
    latency = time.monotonic() - asked[0]
    timer.join()
    assert result.interrupted and 0 < result.position.n_stored < 400
    assert saved["state"]["rows"] == 16  # 0.18 s / (4 × 2 ms) = 22.5 → 16
    assert latency < BOUND, latency

    fresh = _kernel()
    template = fresh.init_from_flow(N_CHAINS, torch.Generator().manual_seed(0))
    state = state_from_dict(template, saved["state"])
    gen2 = torch.Generator().set_state(saved["generator"])
    pos = saved["position"]
    done, _ = _run(tmp_path / "a.h5", fresh, state, gen2, start=pos, n_rows=pos.n_stored)
    assert not done.interrupted and done.position.n_stored == 400

    ref_kernel = _kernel()
    ref_gen = torch.Generator().manual_seed(11)
    ref_state = ref_kernel.init_from_flow(N_CHAINS, ref_gen)
    _run(tmp_path / "b.h5", ref_kernel, ref_state, ref_gen)
    a, b = _read(tmp_path / "a.h5"), _read(tmp_path / "b.h5")
    for name in a:
        assert np.array_equal(a[name], b[name]), name

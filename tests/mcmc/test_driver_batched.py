"""The driver advances a flow chain a proposal buffer at a time (``IndependenceMetropolis.steps``);
its files are bit-identical to stepping one update at a time, for any schedule, block and stop."""

import h5py
import numpy as np
import pytest
import torch

from lattice.scalar import Phi4
from mcmc.driver import Schedule, run_chain
from mcmc.io.store import EnsembleWriter
from mcmc.kernels.independence import IndependenceMetropolis
from tests.mcmc.kernels.test_independence import GaussianProposal


class StepOnly:
    """The same kernel seen through ``init``/``step`` only: the driver's per-update path."""

    def __init__(self, kernel):
        self.kernel, self.theory = kernel, kernel.theory

    def init(self, x):
        return self.kernel.init(x)

    def step(self, state, generator):
        return self.kernel.step(state, generator)


def _file(path, kernel, schedule, stop_at=None):
    theory = kernel.theory
    gen = torch.Generator().manual_seed(8)
    state = getattr(kernel, "kernel", kernel).init_from_flow(3, gen)
    names = list(theory.observables(state.x))
    writer = EnsembleWriter.create(path, field_shape=(4, 4), n_chains=3, field_dtype="float64",
                                   obs_names=names, attrs={}, proposal_obs_names=tuple(names))
    polls = []

    def stop():
        polls.append(1)
        return stop_at is not None and len(polls) >= stop_at

    result = run_chain(kernel, state, gen, schedule=schedule, measure=theory.observables, writer=writer,
                       stop_requested=stop, progress=False)
    writer.close()
    with h5py.File(path, "r") as f:
        data = {}
        f.visititems(lambda k, obj: data.__setitem__(k, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return result, data


@pytest.mark.parametrize("schedule", [Schedule(7, 53, 3, block=10), Schedule(0, 120, 1, block=25),
                                      Schedule(40, 30, 2, block=7)])
def test_batched_and_per_update_paths_write_identical_files(tmp_path, schedule):
    kernel = IndependenceMetropolis(Phi4((4, 4), 1.0, 0.0), GaussianProposal((4, 4), s=0.45), batch=16)
    fast, a = _file(tmp_path / "a.h5", kernel, schedule)
    slow, b = _file(tmp_path / "b.h5", StepOnly(kernel), schedule)
    assert set(a) == set(b) and "proposal_obs/phi2" in a and len(a["traj"]) == schedule.n_configs
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name
    assert torch.equal(fast.state.x, slow.state.x) and fast.position == slow.position
    assert abs(fast.acceptance - slow.acceptance) < 1e-12 and 0.05 < fast.acceptance < 0.95


def test_a_stop_between_buffers_keeps_every_stored_update(tmp_path):
    kernel = IndependenceMetropolis(Phi4((4, 4), 1.0, 0.0), GaussianProposal((4, 4), s=0.45), batch=16)
    result, data = _file(tmp_path / "a.h5", kernel, Schedule(5, 200, 1, block=50), stop_at=3)
    assert result.interrupted and result.position.n_stored == len(data["traj"]) > 0
    assert np.array_equal(data["traj"], np.arange(6, 6 + len(data["traj"])))

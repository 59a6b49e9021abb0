"""How a process finds its place in an MPI job (no MPI needed: the communicator is a stand-in)."""

import pytest

import mcmc.parallel as parallel
from mcmc.distributed import local_batch
from mcmc.runtime import World


class FakeComm:
    COMM_TYPE_SHARED = 0

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


@pytest.fixture
def launcher(monkeypatch):
    for var in (*parallel._LAUNCHER_VARS, *parallel._SIZE_VARS, *parallel._LOCAL_RANK_VARS, "SLURM_STEP_ID"):
        monkeypatch.delenv(var, raising=False)

    def launch(comm, **env):
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        monkeypatch.setattr(parallel, "_comm", lambda: comm)

    return launch


def test_outside_a_launcher_is_one_replica(launcher):
    launcher(None)
    assert parallel.detect_world() == World(0, 1, 0)


def test_rank_size_and_local_rank_under_a_launcher(launcher):
    launcher(FakeComm(3, 4), PMI_RANK=3, PMI_SIZE=4, MPI_LOCALRANKID=1)
    assert parallel.detect_world() == World(3, 4, 1)


def test_launcher_without_mpi4py_is_a_one_line_error(launcher):
    launcher(None, PMI_RANK=0, PMI_SIZE=2)
    with pytest.raises(parallel.ParallelError, match="started as 2 processes.*mpi4py is not importable"):
        parallel.detect_world()


def test_mpi4py_of_another_mpi_is_a_one_line_error(launcher):
    """Every process would be rank 0 of 1 and all would write replica 0: refused."""
    launcher(FakeComm(0, 1), SLURM_PROCID=1, SLURM_STEP_ID=0, SLURM_STEP_NUM_TASKS=8)
    with pytest.raises(parallel.ParallelError, match="launcher started 8 processes but mpi4py sees 1"):
        parallel.detect_world()


def test_single_process_collectives_are_local():
    world = World()
    assert parallel.bcast(world, 5) == 5 and parallel.allgather(world, 5) == [5]
    assert parallel.any_rank(world, True) and not parallel.any_rank(world, False)
    assert parallel.gather_timing(world, {"sample_s": 1.5}) == {"sample_s": 1.5}


@pytest.mark.parametrize(("n", "size"), [(7, 2), (16, 3), (5, 5), (64, 4)])
def test_batch_shares_sum_to_the_total(n, size):
    shares = [local_batch(n, World(r, size)) for r in range(size)]
    assert sum(shares) == n and max(shares) - min(shares) <= 1

"""Process layout: one replica per MPI rank when running under ``mpiexec``/``srun``, else one replica.

mpi4py is optional: without an MPI launcher everything runs as replica 0 of 1 and MPI is never
initialised. Under a launcher that started R > 1 processes, mpi4py must be importable and must see
the same R processes (else the job stops at once with a one-line error, instead of R processes all
writing replica 0). The collectives below are called by every rank, in the same order.

A rank that fails alone would leave the others waiting in a collective until the wall-clock limit,
so the command line ends the whole job with :func:`abort` when any rank fails.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcmc.io.store import replica_path
from mcmc.runtime import JobError, World

_LAUNCHER_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_RANK_VARS = (
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MV2_COMM_WORLD_LOCAL_RANK",
)


class ParallelError(JobError):
    """The MPI environment is inconsistent (launcher and mpi4py disagree); one-line message."""


def launcher_size() -> int:
    """How many processes the launcher says it started (1 when not started by a launcher)."""
    for var in _SIZE_VARS:
        if var in os.environ:
            return int(os.environ[var])
    if os.environ.get("SLURM_STEP_ID", "").isdigit() and "SLURM_PROCID" in os.environ:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    return 1


def _launched() -> bool:
    return launcher_size() > 1 or any(v in os.environ for v in _LAUNCHER_VARS)


@functools.cache
def _comm() -> Any:
    """The MPI world communicator when launched by an MPI launcher and mpi4py is importable, else None."""
    if not _launched():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


def detect_world() -> World:
    """Rank, size and node-local rank of this process."""
    expected, comm = launcher_size(), _comm()
    if comm is None:
        if expected > 1:
            raise ParallelError(
                f"started as {expected} processes by an MPI launcher, but mpi4py is not importable; "
                "install it with pip install 'latflow[mpi]' (or the cluster's mpi4py)"
            )
        return World()
    size = comm.Get_size()
    if expected > 1 and size != expected:
        raise ParallelError(
            f"the launcher started {expected} processes but mpi4py sees {size}: it is built for another "
            "MPI than the launcher's; use the mpiexec of that MPI or rebuild mpi4py against the launcher's"
        )
    if size == 1:
        return World()
    local = next((int(os.environ[v]) for v in _LOCAL_RANK_VARS if v in os.environ), None)
    if local is None:
        local = comm.Split_type(split_type=comm.COMM_TYPE_SHARED).Get_rank()
    return World(rank=comm.Get_rank(), size=size, local_rank=local)


def comm(world: World) -> Any:
    """The MPI communicator of a ``world`` with more than one rank (mpi4py's COMM_WORLD)."""
    if world.size == 1:
        raise ParallelError("no MPI communicator: this is a single-process run")
    return _comm()


def barrier(world: World) -> None:
    if world.size > 1:
        _comm().Barrier()


def bcast(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    return value if world.size == 1 else _comm().bcast(value, root=0)


def allgather(world: World, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    return [value] if world.size == 1 else _comm().allgather(value)


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    return bool(flag) if world.size == 1 else any(allgather(world, bool(flag)))


def gather_timing(world: World, timing: Mapping[str, float]) -> dict[str, float]:
    """Timing of every rank reduced to its maximum on rank 0 (the wall-clock a job really took)."""
    if world.size == 1:
        return dict(timing)
    gathered = _comm().gather(dict(timing), root=0)
    if world.rank != 0:
        return dict(timing)
    return {k: max(t[k] for t in gathered) for k in timing}


def replica_files(out: str | Path, ensemble: str, world: World) -> list[Path]:
    """The files of every replica of the ensemble ``<out>/<ensemble>``. Every rank must call it: it ends
    with a barrier, so that every file is closed when it returns."""
    barrier(world)
    return [replica_path(out, ensemble, r) for r in range(world.size)]


def in_parallel() -> bool:
    """Whether this process has joined an MPI job of more than one rank."""
    if _comm.cache_info().currsize == 0:  # MPI was never initialised by this process
        return False
    mpi_comm = _comm()
    return mpi_comm is not None and mpi_comm.Get_size() > 1


def abort(code: int) -> None:
    """Under MPI with more than one rank, end every rank of the job now with exit status ``code``.

    Without MPI (or with one rank) this does nothing and the caller exits as usual.
    """
    if in_parallel():
        sys.stdout.flush()
        sys.stderr.flush()
        _comm().Abort(code)

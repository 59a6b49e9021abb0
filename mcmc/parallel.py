"""Process layout: one replica per MPI rank when running under ``mpiexec``/``srun``, else one replica.

mpi4py is optional: without it, or outside an MPI launcher, everything runs as replica 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcmc.job import World
from mcmc.store import replica_path

_LAUNCHER_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_LOCAL_RANK_VARS = (
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MV2_COMM_WORLD_LOCAL_RANK",
)


def _comm() -> Any:
    """The MPI world communicator when launched by an MPI launcher and mpi4py is importable, else None."""
    if not any(v in os.environ for v in _LAUNCHER_VARS):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


def detect_world() -> World:
    """Rank, size and node-local rank of this process."""
    comm = _comm()
    if comm is None or comm.Get_size() == 1:
        return World()
    local = next((int(os.environ[v]) for v in _LOCAL_RANK_VARS if v in os.environ), None)
    if local is None:
        local = comm.Split_type(split_type=comm.COMM_TYPE_SHARED).Get_rank()
    return World(rank=comm.Get_rank(), size=comm.Get_size(), local_rank=local)


def barrier(world: World) -> None:
    if world.size > 1:
        _comm().Barrier()


def gather_timing(world: World, timing: Mapping[str, float]) -> dict[str, float]:
    """Timing of every rank reduced to its maximum on rank 0 (the wall-clock a job really took)."""
    if world.size == 1:
        return dict(timing)
    gathered = _comm().gather(dict(timing), root=0)
    if world.rank != 0:
        return dict(timing)
    return {k: max(t[k] for t in gathered) for k in timing}


def replica_files(card: Any, world: World) -> list[Path]:
    """The files of every replica of the card's ensemble (after a barrier, so all are closed)."""
    barrier(world)
    return [replica_path(card.out, card.ensemble, r) for r in range(world.size)]

"""What a job shares with everything it runs: its place among the MPI ranks (``World``), its seeds,
the device it runs on, the stop flag that signals raise, the ``BuildContext`` a sampler spec builds its
kernel in, the ``KernelBuild`` record of a made kernel, and ``JobError``.

Seeds: replica r of a run seeded s uses ``SeedSequence(s).spawn(R)[r]`` (DESIGN.md); flow training uses
``SeedSequence(s, spawn_key=(TRAIN_SPAWN_KEY,))``, shared by all ranks.
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class JobError(RuntimeError):
    """A sampling job that cannot start or continue; one-line message."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: replica ``rank`` of ``size``, and its rank on the node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


@dataclass(frozen=True)
class KernelBuild:
    """A kernel with what it cost to make: training seconds and a hash of any trained model."""

    kernel: Any
    train_s: float = 0.0
    model_hash: str = ""
    interrupted: bool = False  # a stop request ended the flow's training early
    train_cpu_s: float = 0.0  # the training's CPU seconds (wall-clock: train_s)


def _never() -> bool:
    return False


@dataclass(frozen=True)
class BuildContext:
    """Where a sampler spec builds its kernel: the chains' ``device`` and ``dtype``, this process's
    ``world``, whether to show ``progress``; ``stop`` (polled by flow training) turns true when the job
    is asked to stop; ``frozen``: a flow checkpoint must exist and is loaded as it is, never trained
    further, as a resumed ensemble needs."""

    device: torch.device
    dtype: torch.dtype
    world: World = World()
    progress: bool = False
    stop: Callable[[], bool] = _never
    frozen: bool = False


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' or 'cuda' → ``cuda:<local_rank % n_gpus>`` when CUDA is available, else the CPU (a card
    asking for 'cuda' where there is none is refused by ``mcmc.setup``)."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


TRAIN_SPAWN_KEY = 0x7472_6169  # distinct from every replica index


def seed_sequence(seed: int, replica: int, n_replicas: int) -> np.random.SeedSequence:
    """Replica r of a run seeded s uses ``SeedSequence(s).spawn(R)[r]`` (DESIGN.md)."""
    return np.random.SeedSequence(seed).spawn(n_replicas)[replica]


def torch_generator(ss: np.random.SeedSequence, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from a SeedSequence (63 bits of its state)."""
    seed = int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return torch.Generator(device=device).manual_seed(seed)


def train_seed_sequence(seed: int) -> np.random.SeedSequence:
    """The SeedSequence of flow training, shared by all ranks."""
    return np.random.SeedSequence(seed, spawn_key=(TRAIN_SPAWN_KEY,))


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Turn SIGTERM, SIGUSR1 and SIGINT into a flag, so the driver can checkpoint and stop cleanly."""
    caught: list[int] = []
    names = [s for s in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, s)]
    previous = {}
    for name in names:
        sig = getattr(signal, name)
        try:
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
        except ValueError:  # not the main thread
            pass
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def model_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of a model's parameters, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

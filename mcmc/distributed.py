"""Data-parallel flow training over the ranks of an MPI job, with ``torch.distributed``.

The process group is made from the MPI world: rank 0 picks the rendezvous address and port and
broadcasts them with mpi4py; the backend is gloo on CPU and nccl on GPU. One training step with
total batch N (``train.batch_size``, or its doubling schedule) over R ranks:

* rank r draws its share n_r = ⌊N/R⌋ (+1 for r < N mod R) from its own generator
  (``SeedSequence`` child r of the training seed), and back-propagates Σ_{i∈r} [log q(x_i) + S(x_i)] / N;
* one all-reduce sums the gradients, so every rank holds the gradient of the total-batch loss
  (1/N) Σ_i [log q(x_i) + S(x_i)], which is what one process computes from the same N samples;
* the step is skipped everywhere when the total loss or the gradient norm is not finite; otherwise
  every rank clips and takes the same Adam step, so the weights stay identical on every rank
  (checked at the end).

This is ``flows.train.train_flow`` itself, given a :class:`RankCollective`: there is one training loop,
and every estimator, validation and model selection of it works the same over ranks (each rank
evaluates the same fixed validation set, so every rank keeps the same best flow).

Only rank 0 writes the flow checkpoint (``flows.train``'s format plus every rank's generator state,
so a resumed run continues each rank's stream). The time budget and a stop request (a signal) are
agreed on by all ranks before each step, so no rank is left waiting in a collective, and a schedule
that follows the clock (``train.time_schedule``) follows rank 0's clock on every rank.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from flows.checkpoint import load_checkpoint, save_checkpoint
from flows.collective import Collective
from flows.estimators import reparam_backward
from flows.train import TrainConfig, TrainResult, train_flow
from mcmc.parallel import allgather, bcast
from mcmc.runtime import JobError, World, model_hash

log = logging.getLogger("latflow")


def local_batch(n_total: int, world: World) -> int:
    """This rank's share of a total batch ``n_total``: the shares differ by at most one and sum to it."""
    return n_total // world.size + int(world.rank < n_total % world.size)


def _endpoint(world: World) -> tuple[str, int]:
    """Rendezvous address and port of rank 0 (``MASTER_ADDR``/``MASTER_PORT`` when set)."""
    one_host = len(set(allgather(world, socket.gethostname()))) == 1
    if world.rank != 0:
        return "", 0
    addr = os.environ.get("MASTER_ADDR") or (
        "127.0.0.1" if one_host else socket.gethostbyname(socket.gethostname())
    )
    port = os.environ.get("MASTER_PORT")
    if port is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
    return addr, int(port)


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """A ``torch.distributed`` process group over the MPI ranks for the duration of the block."""
    if dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    addr, port = bcast(world, _endpoint(world))
    dist.init_process_group(
        backend,
        init_method=f"tcp://{addr}:{port}",
        rank=world.rank,
        world_size=world.size,
        timeout=timedelta(minutes=30),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def reduce_gradients(params: list[torch.Tensor]) -> None:
    """Sum the gradients of ``params`` over the ranks in place, one all-reduce per dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()


def distributed_backward(
    flow: Any, theory: Any, n_total: int, generator: torch.Generator, world: World
) -> tuple[float, torch.Tensor]:
    """Back-propagate this rank's part of the total-batch loss (reparameterised) and all-reduce the
    gradients. Returns the total-batch loss and every rank's log w = −S − log q, concatenated in rank
    order (float64, CPU), both identical on every rank."""
    collective = RankCollective(world)
    local = reparam_backward(flow, theory, collective.share(n_total), n_total, generator)
    collective.reduce_gradients([p for p in flow.parameters() if p.grad is not None])
    logw = collective.gather(local.to("cpu", torch.float64))
    return float(-logw.mean()), logw


def _reseed(generator: torch.Generator, world: World, step: int) -> None:
    """A fresh stream for this rank when a checkpoint holds no state for it (another rank count)."""
    ss = np.random.SeedSequence([generator.initial_seed(), world.rank, step])
    generator.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


class RankCollective(Collective):
    """The ranks of an MPI job (inside :func:`process_group`): gradients summed by one all-reduce per
    dtype, log-weights all-gathered, stopping agreed before each step, rank 0 reading (then
    broadcasting) and writing the checkpoint with every rank's generator state."""

    def __init__(self, world: World) -> None:
        self.world, self.size = world, world.size

    def share(self, n_total: int) -> int:
        return local_batch(n_total, self.world)

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
        reduce_gradients(params)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = allgather(self.world, t.detach().to("cpu", torch.float64).numpy())
        return torch.from_numpy(np.concatenate(parts)).to(t.device)

    def agree(self, out_of_time: bool, stop: bool, seconds: float) -> tuple[bool, bool, float]:
        flags = allgather(self.world, (out_of_time, stop, seconds))
        return any(f[0] for f in flags), any(f[1] for f in flags), flags[0][2]

    def load(self, path: Path | None, theory: Any, flow: Any) -> dict[str, Any] | None:
        found = path is not None and self.world.rank == 0 and path.exists()
        return bcast(self.world, load_checkpoint(path, theory, flow.config.to_dict()) if found else None)

    def restore_generator(self, saved: dict[str, Any], generator: torch.Generator) -> None:
        states = saved.get("rank_generators")
        if states is not None and len(states) == self.world.size:
            generator.set_state(states[self.world.rank])
        else:
            _reseed(generator, self.world, saved["step"])

    def save(self, path: Path | None, payload: Callable[[], dict[str, Any]],
             generator: torch.Generator) -> None:
        """Rank 0 writes the checkpoint with every rank's generator state (all ranks must call this)."""
        states = allgather(self.world, generator.get_state())
        if self.world.rank == 0 and path is not None:
            save_checkpoint(path, {**payload(), "rank_generators": states, "n_ranks": self.world.size})

    def finish(self, flow: Any) -> None:
        if len(set(allgather(self.world, model_hash(flow.state_dict())))) != 1:
            raise JobError("distributed training left different weights on different ranks")


def train_distributed(
    flow: Any,
    theory: Any,
    config: TrainConfig,
    generator: torch.Generator,
    world: World,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop: Callable[[], bool] = lambda: False,
    tail_index: Callable[[np.ndarray], float] | None = None,
) -> TrainResult:
    """``train_flow`` on every rank (call it on all ranks, inside :func:`process_group`), after rank 0's
    weights are broadcast. ``generator`` is this rank's own stream; ``config.batch_size`` is the total
    batch over all ranks. Resuming reads rank 0's checkpoint (broadcast, so no shared file system is
    needed). Stops after ``config.steps`` steps, when the time budget is spent ("time") or when
    ``stop()`` turns true on any rank ("signal"), always with a checkpoint."""
    if config.batch_size < world.size:
        raise JobError(f"train.batch_size = {config.batch_size} is below the {world.size} ranks")
    broadcast_parameters(flow)
    return train_flow(flow, theory, config, generator, checkpoint_path, resume, progress, stop,
                      collective=RankCollective(world), tail_index=tail_index)

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

Only rank 0 writes the flow checkpoint (``flows.train``'s format plus every rank's generator state,
so a resumed run continues each rank's stream). The time budget and a stop request (a signal) are
agreed on by all ranks before each step, so no rank is left waiting in a collective, and a schedule
that follows the clock (``train.time_schedule``) follows rank 0's clock on every rank.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from flows.train import (
    METRICS,
    TrainConfig,
    TrainResult,
    acceptance_estimate,
    batch_size,
    checkpoint_payload,
    cpu_clock,
    ess_fraction,
    learning_rate,
    load_checkpoint,
    restore_history,
    save_checkpoint,
)
from mcmc.job import JobError, World, model_hash
from mcmc.parallel import allgather, bcast

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
    """Back-propagate this rank's part of the total-batch loss and all-reduce the gradients.

    Returns the total-batch loss and every rank's log w = −S − log q, concatenated in rank order
    (float64, CPU), both identical on every rank.
    """
    x, logq = flow.forward_with_logq(local_batch(n_total, world), generator)
    action = theory.action(x)
    ((logq + action).sum() / n_total).backward()
    reduce_gradients([p for p in flow.parameters() if p.grad is not None])
    local = (-action - logq).detach().to("cpu", torch.float64).numpy()
    logw = torch.from_numpy(np.concatenate(allgather(world, local)))
    return float(-logw.mean()), logw


def _step(
    flow: Any,
    theory: Any,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    world: World,
    seconds: float,
) -> tuple[dict[str, float], bool]:
    """One data-parallel Adam step after ``seconds`` of training (rank 0's clock, so that a time-based
    schedule gives every rank the same learning rate and batch); returns the metrics and whether the
    step was skipped."""
    lr, n = learning_rate(config, step, seconds), batch_size(config, step, seconds)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss, logw = distributed_backward(flow, theory, n, generator, world)
    metrics = {
        "loss": loss,
        "ess": ess_fraction(logw),
        "acceptance": acceptance_estimate(logw),
        "lr": lr,
        "batch_size": float(n),
        "grad_norm": float("nan"),
    }
    params = [p for p in flow.parameters() if p.grad is not None]
    clip = config.grad_clip if config.grad_clip is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item() if params else 0.0
    metrics["grad_norm"] = grad_norm
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        return metrics, True
    optimizer.step()
    return metrics, False


def _reseed(generator: torch.Generator, world: World, step: int) -> None:
    """A fresh stream for this rank when a checkpoint holds no state for it (another rank count)."""
    ss = np.random.SeedSequence([generator.initial_seed(), world.rank, step])
    generator.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


def _restore(
    saved: dict[str, Any],
    flow: Any,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    world: World,
) -> None:
    flow.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    states = saved.get("rank_generators")
    if states is not None and len(states) == world.size:
        generator.set_state(states[world.rank])
    else:
        _reseed(generator, world, saved["step"])


def _write(
    path: Path | None, payload: Callable[[], dict[str, Any]], generator: torch.Generator, world: World
) -> None:
    """Rank 0 writes the checkpoint with every rank's generator state (all ranks must call this)."""
    states = allgather(world, generator.get_state())
    if world.rank == 0 and path is not None:
        save_checkpoint(path, {**payload(), "rank_generators": states, "n_ranks": world.size})


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
) -> TrainResult:
    """Train ``flow`` in place on every rank (call it on all ranks, inside :func:`process_group`).

    ``generator`` is this rank's own stream; ``config.batch_size`` is the total batch over all ranks.
    Resuming reads rank 0's checkpoint (broadcast, so no shared file system is needed). Stops after
    ``config.steps`` steps, when the time budget is spent ("time") or when ``stop()`` turns true on any
    rank ("signal"), always with a checkpoint.
    """
    if config.batch_size < world.size:
        raise JobError(f"train.batch_size = {config.batch_size} is below the {world.size} ranks")
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    broadcast_parameters(flow)
    history: dict[str, list[float]] = {k: [] for k in METRICS}
    step, n_skipped, seconds_before = 0, 0, 0.0
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    found = resume and path is not None and world.rank == 0 and path.exists()
    saved = bcast(world, load_checkpoint(path, theory, flow.config.to_dict()) if found else None)
    if saved is not None:
        _restore(saved, flow, optimizer, generator, world)
        step, n_skipped, seconds_before = saved["step"], saved["n_skipped"], saved["seconds"]
        history = restore_history(saved)
    flow.train()
    start, cpu_seconds = time.perf_counter(), cpu_clock(history)

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - start

    def payload() -> dict[str, Any]:
        return checkpoint_payload(
            flow, theory, config, optimizer, generator, step, history, n_skipped, elapsed()
        )

    stopped_by = "steps"
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train flow", dynamic_ncols=True)
    while step < config.steps:
        now = config.spent(elapsed(), cpu_seconds())
        flags = allgather(world, (config.max_seconds is not None and now >= config.max_seconds, stop(), now))
        if any(t or s for t, s, _ in flags):
            stopped_by = "signal" if any(s for _, s, _ in flags) else "time"
            break
        metrics, skipped = _step(flow, theory, config, optimizer, generator, step, world, flags[0][2])
        n_skipped += int(skipped)
        step += 1
        metrics["seconds"], metrics["cpu_seconds"] = elapsed(), cpu_seconds()
        for k in METRICS:
            history[k].append(metrics[k])
        bar.update(1)
        if progress and step % config.log_every == 0:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", ess=f"{metrics['ess']:.3f}", skipped=n_skipped)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            _write(path, payload, generator, world)
    bar.close()
    flow.eval()
    _write(path, payload, generator, world)
    if len(set(allgather(world, model_hash(flow.state_dict())))) != 1:
        raise JobError("distributed training left different weights on different ranks")
    history_arrays = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    return TrainResult(history_arrays, n_skipped, elapsed(), step, stopped_by)

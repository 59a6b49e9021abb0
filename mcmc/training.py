"""Flows inside a sampling job: the flow sampler's spec (``FlowSpec``, made from the card by ``mcmc.setup``),
training (or loading) its flow, and the independence kernel on it.

The trained flow lives at ``<out>/<ensemble>.flow.pt``, beside the ensemble. Its checkpoint records
the theory and architecture it was trained for; a checkpoint for anything else is refused with a
one-line error and never used. An unfinished training (killed, or fewer steps than the card asks
for, within the time budget) is resumed where it stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from flows.accel import AccelConfig, training_accel
from flows.checkpoint import CheckpointMismatch, load_checkpoint, warm_start
from flows.model import Flow
from flows.registry import FlowFamily, flow_from_checkpoint
from flows.train import TrainConfig, last_cpu_seconds, train_flow
from lattice.theories import Theory
from mcmc import runtime
from mcmc.budget import check_fits
from mcmc.curriculum import carry_weights, stage_costs
from mcmc.plan import JobPlan
from mcmc.runtime import (
    BuildContext,
    JobError,
    KernelBuild,
    World,
    model_hash,
    resolve_device,
    torch_generator,
    train_seed_sequence,
)

log = logging.getLogger("latflow")


class Stage(NamedTuple):
    """One curriculum stage (``mcmc.curriculum``): its theory and its flow spec."""

    theory: Theory
    spec: FlowSpec


@dataclass(frozen=True)
class FlowSpec:
    """A flow sampler: the flow ``family`` of the theory with its ``flow_config`` and ``train_config``,
    the checkpoint ``path`` (``<out>/<ensemble>.flow.pt``), the directory of the training ``plots``, the
    run's ``seed``, the GPU training options ``accel``, the curriculum ``stages`` trained first, and
    the independence kernel's proposal buffer: ``proposal_batch`` flow samples per refill, at most
    ``buffer_bytes``, refilled for at most ``refill_seconds``."""

    family: FlowFamily
    flow_config: Any
    train_config: TrainConfig
    path: Path
    plots: Path
    seed: int
    accel: AccelConfig = AccelConfig()
    stages: tuple[Stage, ...] = ()
    proposal_batch: int = 1024
    buffer_bytes: int = 1 << 30
    refill_seconds: float | None = 2.0
    kind: ClassVar[str] = "flow"
    cpu_only: ClassVar[bool] = False
    rate: ClassVar[str] = "accepted"

    def build(self, theory: Theory, ctx: BuildContext) -> KernelBuild:
        return flow_kernel(self, theory, ctx)

    def discard_stale(self, theory: Theory) -> bool:
        return discard_stale_flow(self, theory)


def read_flow(spec: FlowSpec, theory: Any) -> dict[str, Any]:
    """``load_checkpoint`` with a damaged file turned into a one-line ``JobError`` naming it (a checkpoint
    for another theory or flow still raises ``CheckpointMismatch``)."""
    path = spec.path
    try:
        return load_checkpoint(path, theory, spec.flow_config.to_dict())
    except CheckpointMismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a damaged file
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise JobError(
            f"{path}: not a readable flow checkpoint ({type(exc).__name__}: {first}); delete it to train "
            "the flow again (an ensemble sampled with it can then no longer be resumed) or restore it"
        ) from None


def discard_stale_flow(spec: FlowSpec, theory: Any) -> bool:
    """``--overwrite``: delete a flow checkpoint at the spec's path that was made for another theory or
    architecture (e.g. by an older version's defaults), so that it is retrained instead of refused.
    A matching checkpoint is kept. Returns whether one was deleted."""
    if not spec.path.exists():
        return False
    try:
        read_flow(spec, theory)
    except (CheckpointMismatch, JobError) as exc:
        log.warning("--overwrite: replacing the flow checkpoint that does not fit this card (%s)", exc)
        spec.path.unlink()
        return True
    return False


def _finished(saved: dict[str, Any], config: TrainConfig) -> bool:
    """Training is done when it reached its steps or spent its time budget."""
    spent = config.spent(saved["seconds"], last_cpu_seconds(saved["metrics"], default=0.0))
    out_of_time = config.max_seconds is not None and spent >= config.max_seconds
    return saved["step"] >= config.steps or out_of_time


@dataclass(frozen=True)
class TrainedFlow:
    """A trained (or loaded) flow, its cumulative training seconds, and whether a stop request ended
    its training early (then it must not be used for sampling: ``--resume`` continues the training)."""

    flow: Flow
    seconds: float
    interrupted: bool = False
    cpu_seconds: float = math.nan  # CPU seconds of the training process(es) of rank 0


def _checkpoint_status(spec: FlowSpec, theory: Any, world: World) -> str:
    """Rank 0 reads the flow checkpoint; every rank gets its verdict: finished, partial or none."""
    from mcmc.parallel import bcast

    status = "none"
    if world.rank == 0 and spec.path.exists():
        saved = read_flow(spec, theory)  # CheckpointMismatch, JobError
        status = "finished" if _finished(saved, spec.train_config) else "partial"
        log.info("flow checkpoint %s: %s at step %d (%.1f s)", spec.path, status, saved["step"],
                 saved["seconds"])
    return bcast(world, status)


def trained_flow(
    spec: FlowSpec,
    theory: Any,
    device: torch.device,
    *,
    progress: bool,
    resume: bool = True,
    world: World | None = None,
    stop: Callable[[], bool] = lambda: False,
    frozen: bool = False,
    start: Flow | None = None,
) -> TrainedFlow:
    """The flow of ``spec``: loaded when a finished matching checkpoint exists, else trained
    (data-parallel over the MPI ranks when there are several; see ``mcmc.distributed``), after the
    curriculum ``spec.stages`` (``mcmc.curriculum``). A new training starts from ``start``'s weights
    where their shapes agree (the previous stage), else from ``train_config.init_from`` or as built.
    ``frozen``: the checkpoint must exist and is loaded as it is, finished or not (a resumed ensemble's
    flow).

    The flow is float32, on ``device``; the seconds are cumulative over resumed trainings.
    """
    world = world or World()
    if frozen and not spec.path.exists():
        raise JobError(f"{spec.path}: the flow this ensemble was sampled with is missing; restore it to "
                       "resume, or start the ensemble again with --overwrite")
    status = "finished" if frozen else _checkpoint_status(spec, theory, world)
    if status == "finished":
        return _loaded_flow(spec, theory, device)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    seeds = train_seed_sequence(spec.seed)
    generator = torch_generator(seeds, device)
    # the same weights on every rank
    flow = spec.family.build(theory, spec.flow_config, generator=generator, device=device)
    resume = resume and status == "partial"
    if not resume:
        interrupted = _starting_weights(spec, flow, device, start, progress=progress, world=world, stop=stop)
        if interrupted is not None:
            return interrupted
    accel = training_accel(flow, spec.accel, device)
    if world.size == 1:
        with accel:
            result = train_flow(flow, theory, spec.train_config, generator, checkpoint_path=spec.path,
                                resume=resume, progress=progress, stop=stop, tail_index=_pareto_k)
    else:
        from mcmc.distributed import process_group, train_distributed

        rank_generator = torch_generator(seeds.spawn(world.size)[world.rank], device)
        with process_group(world, device), accel:
            result = train_distributed(flow, theory, spec.train_config, rank_generator, world,
                                       checkpoint_path=spec.path, resume=resume, progress=progress, stop=stop,
                                       tail_index=_pareto_k)
    _log_training(result, spec.train_config.eval_batch)
    if world.rank == 0:
        _plot_training(result.metrics, spec.plots / "training.png")
    return _with_stage_costs(spec, TrainedFlow(
        flow, result.seconds, interrupted=result.stopped_by == "signal", cpu_seconds=result.cpu_seconds))


def _loaded_flow(spec: FlowSpec, theory: Any, device: torch.device) -> TrainedFlow:
    """The finished flow of ``spec``'s checkpoint, with its (and its stages') training cost."""
    saved = read_flow(spec, theory)  # raises CheckpointMismatch
    flow = flow_from_checkpoint(saved, theory, device=device)
    untrained = 0.0 if saved["step"] == 0 else math.nan  # no steps: no CPU time, not an old file
    return _with_stage_costs(spec, TrainedFlow(
        flow, float(saved["seconds"]), cpu_seconds=last_cpu_seconds(saved["metrics"], default=untrained)))


def _starting_weights(spec: FlowSpec, flow: Flow, device: torch.device, start: Flow | None, *, progress: bool,
                      world: World, stop: Callable[[], bool]) -> TrainedFlow | None:
    """Set the weights a new training starts from: ``start``'s, else the curriculum's last stage's, else
    ``train_config.init_from``'s, else as built; an interrupted stage is returned (None otherwise)."""
    if start is not None:
        carry_weights(start, flow)
    elif spec.stages:
        return _run_stages(spec, flow, device, progress=progress, world=world, stop=stop)
    elif spec.train_config.init_from:
        source = _warm_start(flow, spec.train_config.init_from)  # before any rank trains: one start for all
        log.info("flow weights start from %s (trained for %s)", spec.train_config.init_from, source)
    return None


def _log_training(result: Any, eval_batch: int) -> None:
    """Log the outcome of a training: steps, time, final ESS, and the validation ESS of the kept flow."""
    if result.steps_done:
        log.info(
            "trained flow: %d steps in %.1f s wall, %.1f CPU s (%d skipped, stopped by %s), final ESS %.3f",
            result.steps_done,
            result.seconds,
            result.cpu_seconds,
            result.n_skipped,
            result.stopped_by,
            float(result.metrics["ess"][-1]),
        )
    else:
        log.info("flow used as built: train.steps = 0")
    val = result.validation
    if len(val.get("ess", ())):
        best = int(np.nanargmax(val["ess"])) if np.isfinite(val["ess"]).any() else 0
        log.info("validation (%d proposals): ESS %.3f at the start, best %.3f at step %d (Pareto k̂ %.2f); "
                 "the flow kept is that one", eval_batch, val["ess"][0], val["ess"][best],
                 result.best_step, val["khat"][best])


def _pareto_k(logw: Any) -> float:
    """Pareto k̂ of a validation set's importance weights (``observables.psis``), for the training log."""
    from observables.psis import pareto_k

    return float(pareto_k(logw).k)


def _with_stage_costs(spec: FlowSpec, trained: TrainedFlow) -> TrainedFlow:
    """``trained`` with the curriculum stages' training seconds added (the cost of the whole run)."""
    if not spec.stages:
        return trained
    seconds, cpu = stage_costs([(s.spec.path, s.theory, s.spec.flow_config.to_dict()) for s in spec.stages])
    return TrainedFlow(trained.flow, trained.seconds + seconds, trained.interrupted,
                       trained.cpu_seconds + cpu)


def _run_stages(spec: FlowSpec, flow: Flow, device: torch.device, *, progress: bool, world: World,
                stop: Callable[[], bool]) -> TrainedFlow | None:
    """Train the curriculum stages in order, each from the previous one's weights, and carry the last
    stage's weights into ``flow``; an interrupted stage is returned (None otherwise)."""
    previous = None
    for stage in spec.stages:
        trained = trained_flow(stage.spec, stage.theory, device, progress=progress, world=world, stop=stop,
                               start=previous)
        if trained.interrupted:
            return trained
        previous = trained.flow
    fresh = carry_weights(previous, flow)
    n = len(spec.stages)
    log.info("curriculum: %d stage%s done; weights carried over%s", n, "" if n == 1 else "s",
             f" except {fresh}" if fresh else "")
    return None


def _warm_start(flow: Flow, path: str) -> Any:
    try:
        return warm_start(flow, path)
    except CheckpointMismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file, whatever torch.load makes of it
        kind = type(exc).__name__
        raise JobError(f"train.init_from: {path}: not a readable flow checkpoint ({kind})") from None


def _plot_training(metrics: dict[str, Any], path: Path) -> None:
    import numpy as np

    from observables.plots import plot_training

    if len(metrics.get("loss", [])):
        plot_training({**metrics, "step": np.arange(1, len(metrics["loss"]) + 1)}, path)


def flow_kernel(spec: FlowSpec, theory: Any, ctx: BuildContext) -> KernelBuild:
    """Train or load the flow (all ranks together), then the independence-Metropolis kernel on it."""
    from flows.proposal import proposal_flow
    from mcmc.kernels.independence import IndependenceMetropolis

    trained = trained_flow(spec, theory, ctx.device, progress=ctx.progress, world=ctx.world, stop=ctx.stop,
                           frozen=ctx.frozen)
    # float64 map with float32 conditioners unless accel.proposal_dtype says otherwise (flows.proposal)
    proposal = proposal_flow(trained.flow, spec.accel.proposal_dtype, spec.accel.compile, ctx.device)
    kernel = IndependenceMetropolis(
        theory,
        proposal,
        batch=spec.proposal_batch,
        max_bytes=spec.buffer_bytes,
        refill_seconds=spec.refill_seconds,
    )
    return KernelBuild(
        kernel,
        train_s=trained.seconds,
        train_cpu_s=trained.cpu_seconds,
        model_hash=model_hash(proposal.state_dict()),
        interrupted=trained.interrupted,
    )


def train_only(plan: JobPlan, world: World, *, resume: bool, progress: bool) -> bool:
    """``latflow train``: fit the flow of ``plan.sampler`` (a ``FlowSpec``) and save its checkpoint;
    False when interrupted."""
    from contextlib import nullcontext

    from mcmc.io.lock import WriterLock
    from mcmc.io.store import replica_path
    from mcmc.parallel import any_rank

    spec = plan.sampler
    device = resolve_device(plan.device, world.local_rank)
    check_fits(plan.memory, device)
    if any_rank(world, spec.path.exists() and not resume):
        raise JobError(f"{spec.path} exists; pass --resume to continue training it, or delete it to start "
                       "over")
    # rank 0 writes the flow beside replica 0, under that replica's lock
    lock = WriterLock(replica_path(plan.out, plan.ensemble, 0)) if world.rank == 0 else nullcontext()
    with lock, runtime.stop_signals() as caught:
        trained = trained_flow(spec, plan.theory, device, progress=progress, resume=resume, world=world,
                               stop=lambda: bool(caught))
    if world.rank == 0:
        print(f"flow checkpoint: {spec.path} (training time {trained.seconds:.1f} s wall, "
              f"{trained.cpu_seconds:.1f} CPU s{', curriculum stages included' if spec.stages else ''})")
    return not trained.interrupted

"""Flows inside a sampling job: train (or load) the flow for a card, and wrap it as an independence kernel.

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
from typing import Any

import numpy as np
import torch

from flows.accel import AccelConfig, training_accel
from flows.checkpoint import CheckpointMismatch, load_checkpoint, warm_start
from flows.model import Flow
from flows.registry import FlowFamily, flow_family, flow_from_checkpoint
from flows.train import TrainConfig, last_cpu_seconds, train_flow
from mcmc import runtime
from mcmc.card import Card, CardError, section_settings
from mcmc.curriculum import carry_weights, stage_cards, stage_costs
from mcmc.runtime import JobError, KernelBuild, World, model_hash, torch_generator, train_seed_sequence
from mcmc.setup import build_theory, resolve_device

log = logging.getLogger("latflow")


def flow_path(card: Card) -> Path:
    """``<out>/<ensemble>.flow.pt``."""
    return Path(card.out) / f"{card.ensemble}.flow.pt"


def family(card: Card) -> FlowFamily:
    """The flow family (config class and builder) of the card's theory."""
    try:
        return flow_family(card.theory.name)
    except ValueError as exc:
        raise CardError(f"card: sampler.kind flow: {exc}") from None


def flow_config(card: Card) -> Any:
    """The card's ``flow`` section as the theory's flow config (unset keys take its defaults)."""
    config = family(card).config
    return config.from_mapping(section_settings(card.flow, config, "flow"))


def train_config(card: Card) -> TrainConfig:
    """The card's ``train`` section; keys it leaves unset take the flow family's ``train_defaults``,
    then ``TrainConfig``'s."""
    settings = section_settings(card.train, TrainConfig, "train")
    return TrainConfig.from_mapping({**family(card).train_defaults, **settings})


def read_flow(path: Path, theory: Any, card: Card) -> dict[str, Any]:
    """``load_checkpoint`` with a damaged file turned into a one-line ``JobError`` naming it (a checkpoint
    for another theory or flow still raises ``CheckpointMismatch``)."""
    try:
        return load_checkpoint(path, theory, flow_config(card).to_dict())
    except CheckpointMismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a damaged file
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise JobError(
            f"{path}: not a readable flow checkpoint ({type(exc).__name__}: {first}); delete it to train "
            "the flow again (an ensemble sampled with it can then no longer be resumed) or restore it"
        ) from None


def discard_stale_flow(card: Card) -> bool:
    """``--overwrite``: delete a flow checkpoint at the card's path that was made for another theory or
    architecture (e.g. by an older version's defaults), so that it is retrained instead of refused.
    A matching checkpoint is kept. Returns whether one was deleted."""
    path = flow_path(card)
    if not path.exists():
        return False
    try:
        read_flow(path, build_theory(card), card)
    except (CheckpointMismatch, JobError) as exc:
        log.warning("--overwrite: replacing the flow checkpoint that does not fit this card (%s)", exc)
        path.unlink()
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


def _checkpoint_status(card: Card, theory: Any, world: World) -> str:
    """Rank 0 reads the flow checkpoint; every rank gets its verdict: finished, partial or none."""
    from mcmc.parallel import bcast

    status = "none"
    if world.rank == 0 and flow_path(card).exists():
        saved = read_flow(flow_path(card), theory, card)  # CheckpointMismatch, JobError
        status = "finished" if _finished(saved, train_config(card)) else "partial"
        log.info(
            "flow checkpoint %s: %s at step %d (%.1f s)",
            flow_path(card),
            status,
            saved["step"],
            saved["seconds"],
        )
    return bcast(world, status)


def trained_flow(
    card: Card,
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
    """The flow for ``card``: loaded when a finished matching checkpoint exists, else trained
    (data-parallel over the MPI ranks when there are several; see ``mcmc.distributed``), after the
    curriculum stages of ``train.stages`` (``mcmc.curriculum``). A new training starts from ``start``'s
    weights where their shapes agree (the previous stage), else from ``train.init_from`` or as built.
    ``frozen``: the checkpoint must exist and is loaded as it is, finished or not (a resumed ensemble's
    flow).

    The flow is float32, on ``device``; the seconds are cumulative over resumed trainings.
    """
    world = world or World()
    path, fcfg, tcfg = flow_path(card), flow_config(card), train_config(card)
    if frozen and not path.exists():
        raise JobError(f"{path}: the flow this ensemble was sampled with is missing; restore it to resume, "
                       "or start the ensemble again with --overwrite")
    status = "finished" if frozen else _checkpoint_status(card, theory, world)
    if status == "finished":
        saved = read_flow(path, theory, card)  # raises CheckpointMismatch
        flow = flow_from_checkpoint(saved, theory, device=device)
        untrained = 0.0 if saved["step"] == 0 else math.nan   # no steps: no CPU time, not an old file
        return _with_stage_costs(card, fcfg, TrainedFlow(
            flow, float(saved["seconds"]), cpu_seconds=last_cpu_seconds(saved["metrics"], default=untrained)))
    path.parent.mkdir(parents=True, exist_ok=True)
    seeds = train_seed_sequence(card.seed)
    generator = torch_generator(seeds, device)
    flow = family(card).build(theory, fcfg, generator=generator, device=device)  # same weights on every rank
    resume = resume and status == "partial"
    if not resume and start is not None:
        carry_weights(start, flow)
    elif not resume and stage_cards(card):
        carried = _run_stages(card, flow, device, progress=progress, world=world, stop=stop)
        if carried is not None:
            return carried
    elif not resume and tcfg.init_from:
        source = _warm_start(flow, tcfg.init_from)  # before any rank trains: same start everywhere
        log.info("flow weights start from %s (trained for %s)", tcfg.init_from, source)
    accel = training_accel(flow, AccelConfig.from_mapping(card.accel.model_dump()), device)
    if world.size == 1:
        with accel:
            result = train_flow(flow, theory, tcfg, generator, checkpoint_path=path, resume=resume,
                                progress=progress, stop=stop, tail_index=_pareto_k)
    else:
        from mcmc.distributed import process_group, train_distributed

        rank_generator = torch_generator(seeds.spawn(world.size)[world.rank], device)
        with process_group(world, device), accel:
            result = train_distributed(
                flow,
                theory,
                tcfg,
                rank_generator,
                world,
                checkpoint_path=path,
                resume=resume,
                progress=progress,
                stop=stop,
                tail_index=_pareto_k,
            )
    _log_training(result, tcfg.eval_batch)
    if world.rank == 0:
        _plot_training(result.metrics, Path(card.out) / "plots" / "training.png")
    return _with_stage_costs(card, fcfg, TrainedFlow(
        flow, result.seconds, interrupted=result.stopped_by == "signal", cpu_seconds=result.cpu_seconds))


def _log_training(result: Any, eval_batch: int) -> None:
    """Log the outcome of a training: steps, time, final ESS, and the validation ESS of the kept flow."""
    if result.steps_done:
        log.info(
            "trained flow: %d steps in %.1f s (%d skipped, stopped by %s), final ESS %.3f",
            result.steps_done,
            result.seconds,
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


def _with_stage_costs(card: Card, fcfg: Any, trained: TrainedFlow) -> TrainedFlow:
    """``trained`` with the curriculum stages' training seconds added (the cost of the whole run)."""
    if not card.train.stages:
        return trained
    seconds, cpu = stage_costs(card, build_theory, fcfg.to_dict())
    return TrainedFlow(trained.flow, trained.seconds + seconds, trained.interrupted,
                       trained.cpu_seconds + cpu)


def _run_stages(card: Card, flow: Flow, device: torch.device, *, progress: bool, world: World,
                stop: Callable[[], bool]) -> TrainedFlow | None:
    """Train the curriculum stages in order, each from the previous one's weights, and carry the last
    stage's weights into ``flow``; an interrupted stage is returned (None otherwise)."""
    previous = None
    for stage in stage_cards(card):
        trained = trained_flow(stage, build_theory(stage), device, progress=progress, world=world, stop=stop,
                               start=previous)
        if trained.interrupted:
            return trained
        previous = trained.flow
    fresh = carry_weights(previous, flow)
    log.info("curriculum: %d stages done; weights carried over%s", len(stage_cards(card)),
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


def flow_kernel(
    card: Card,
    theory: Any,
    device: torch.device,
    dtype: torch.dtype,
    world: World,
    progress: bool,
    *,
    stop: Callable[[], bool] = lambda: False,
    frozen: bool = False,
) -> KernelBuild:
    """Train or load the flow (all ranks together), then the independence-Metropolis kernel on it."""
    from mcmc.kernels.independence import IndependenceMetropolis

    trained = trained_flow(card, theory, device, progress=progress, world=world, stop=stop, frozen=frozen)
    proposal = trained.flow.as_float64(conditioner_dtype=torch.float32)  # exact map, cheap conditioners
    kernel = IndependenceMetropolis(
        theory,
        proposal,
        batch=card.sample.proposal_batch,
        max_bytes=max(1, int(card.sample.buffer_mb * 2**20)),
        refill_seconds=card.sample.refill_seconds,
    )
    return KernelBuild(
        kernel,
        train_s=trained.seconds,
        train_cpu_s=trained.cpu_seconds,
        model_hash=model_hash(proposal.state_dict()),
        interrupted=trained.interrupted,
    )


def train_only(card: Card, world: World, *, resume: bool, progress: bool) -> bool:
    """``latflow train``: fit the flow for ``card`` and save its checkpoint; False when interrupted."""
    from contextlib import nullcontext

    from mcmc.budget import check_fits
    from mcmc.io.lock import WriterLock
    from mcmc.io.store import replica_path
    from mcmc.parallel import any_rank

    device = resolve_device(card.device, world.local_rank)
    check_fits(card, device)
    theory = build_theory(card)
    path = flow_path(card)
    if any_rank(world, path.exists() and not resume):
        raise CardError(f"{path} exists; pass --resume to continue training it, or delete it to start over")
    # rank 0 writes the flow beside replica 0, under that replica's lock
    lock = WriterLock(replica_path(card.out, card.ensemble, 0)) if world.rank == 0 else nullcontext()
    with lock, runtime.stop_signals() as caught:
        trained = trained_flow(
            card, theory, device, progress=progress, resume=resume, world=world, stop=lambda: bool(caught)
        )
    if world.rank == 0:
        print(f"flow checkpoint: {path} (training time {trained.seconds:.1f} s)")
    return not trained.interrupted

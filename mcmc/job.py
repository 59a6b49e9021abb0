"""One replica's sampling job: open or resume its file, build the kernel, run the driver, checkpoint.

The job takes a ``mcmc.plan.JobPlan`` (made from the card by ``mcmc.setup``); its sampler spec builds the
kernel, so nothing here depends on the sampler's kind."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lattice.theories import Theory
from mcmc import runtime
from mcmc.budget import check_fits
from mcmc.driver import Position, RunResult, Schedule, Spent, run_chain, state_from_dict, state_to_dict
from mcmc.io.lock import WriterLock
from mcmc.io.store import EnsembleWriter, checkpoint_path, replica_path, save_atomic
from mcmc.measurement import stream_measure
from mcmc.parallel import any_rank, in_parallel
from mcmc.plan import JobPlan
from mcmc.resume import BOTH_FLAGS, chain_settings, plan_start
from mcmc.runtime import (
    BuildContext,
    JobError,
    KernelBuild,
    World,
    resolve_device,
    seed_sequence,
    torch_generator,
)

log = logging.getLogger("latflow")


@dataclass(frozen=True)
class SampleOutcome:
    """Result of one replica's ``sample_replica``: its file, the acceptance rate, whether a stop request
    ended it, and the wall-clock seconds of this session's phases (``train_s``, ``therm_s``, ``sample_s``)."""

    path: Path
    acceptance: float
    interrupted: bool
    timing: dict[str, float]


def _measure_fn(plan: JobPlan) -> Any:
    """The in-stream measurement: the theory's observables plus the card's ``measure:`` groups."""
    return stream_measure(plan.theory, plan.measure_obs, plan.measure_params)


def initial_state(
    kernel: Any,
    theory: Theory,
    n_chains: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> Any:
    """Start B chains: flow chains at independent flow samples (already in equilibrium once one
    proposal is accepted), others at the theory's random start."""
    if hasattr(kernel, "init_from_flow"):
        return kernel.init_from_flow(n_chains, generator)
    return kernel.init(theory.random_field(n_chains, generator, dtype=dtype, device=device))


def provenance(plan: JobPlan, world: World, ss_key: tuple[int, ...]) -> dict[str, Any]:
    """Root attributes of a replica file (DESIGN.md)."""
    return {
        "card": plan.provenance.card_yaml,
        "theory": plan.provenance.theory_json,
        "seed": plan.seed,
        "spawn_key": json.dumps(list(ss_key)),
        "replica": world.rank,
        "n_replicas": world.size,
        "ensemble_id": f"{plan.ensemble}|r{world.rank}",
        "sampler": plan.sampler.kind,
        "physics_hash": plan.provenance.physics_hash,
        "n_configs_target": plan.sampling.n_configs,
    }


def remove_outputs(plan: JobPlan, world: World, path: Path) -> None:
    """``--overwrite`` (after every check passed): delete the old replica file and checkpoint, and on
    rank 0 whatever the sampler keeps that does not fit the plan (a flow checkpoint for another flow)."""
    path.unlink(missing_ok=True)
    checkpoint_path(path).unlink(missing_ok=True)
    if world.rank == 0:
        plan.sampler.discard_stale(plan.theory)


def _checkpoint_payload(
    plan: JobPlan, world: World, model_hash: str, state: Any, generator: torch.Generator, pos: Position,
    timing: dict[str, float],
) -> dict[str, Any]:
    return {
        "state": state_to_dict(state),
        "generator": generator.get_state(),
        "update": pos.update,
        "n_stored": pos.n_stored,
        "physics_hash": plan.provenance.physics_hash,
        "model_hash": model_hash,
        "chain": chain_settings(plan.provenance, world.size),
        "timing": timing,
    }


def _open_writer(
    plan: JobPlan,
    world: World,
    path: Path,
    payload: dict[str, Any] | None,
    state: Any,
    generator: torch.Generator,
    rebuild: Callable[[torch.Tensor], Any] | None = None,
) -> tuple[EnsembleWriter, Any, Position]:
    """A new replica file, or (``payload``: the checked checkpoint) the old one truncated to the
    checkpoint, with the chain state and generator restored; returns the writer, the state and the
    position. ``rebuild``: the kernel's ``init``, for state fields a checkpoint of an older version
    lacks (``mcmc.driver.state_from_dict``)."""
    if payload is None:
        path.unlink(missing_ok=True)
        checkpoint_path(path).unlink(missing_ok=True)
        ss = seed_sequence(plan.seed, world.rank, world.size)
        writer = EnsembleWriter.create(
            path,
            field_shape=tuple(state.x.shape[1:]),
            n_chains=plan.sampling.n_chains,
            field_dtype=str(state.x.dtype).removeprefix("torch."),
            obs_names=list(_measure_fn(plan)(state.x)),
            attrs=provenance(plan, world, tuple(ss.spawn_key)),
            proposal_obs_names=tuple(getattr(state, "buffer_obs", None) or ()),
        )
        return writer, state, Position()
    device = state.x.device
    saved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in payload["state"].items()}
    try:  # before the file is touched: a refused resume changes nothing
        state = state_from_dict(state, saved, rebuild=rebuild)
    except ValueError as exc:
        raise JobError(f"{checkpoint_path(path)}: resume refused, {exc}") from None
    writer = EnsembleWriter.reopen(
        path, payload["n_stored"],
        {"n_configs_target": plan.sampling.n_configs, "card": plan.provenance.card_yaml},
    )
    generator.set_state(payload["generator"])
    start = Position(payload["update"], payload["n_stored"])
    log.info("resuming %s at update %d with %d stored configurations", path, start.update, start.n_stored)
    return writer, state, start


def sample_replica(
    plan: JobPlan,
    world: World | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> SampleOutcome:
    """Generate (or continue) this rank's replica file of the ensemble described by ``plan``.

    Order: the device and the memory estimate are checked (nothing is created yet); the replica's
    writer lock is taken (``mcmc.io.lock``; a live writer refuses this one); every resume check runs
    (``mcmc.resume.plan_start``); only then are files written, deleted or trained.

    SIGTERM, SIGUSR1 and SIGINT stop the job cleanly: during sampling the current block is written
    and checkpointed; during (distributed) flow training the training checkpoint is written and no
    sampling starts. Either way the outcome is ``interrupted`` and ``--resume`` continues.
    """
    world = world or World()
    if resume and overwrite:
        raise JobError(BOTH_FLAGS)
    cpu = torch.device("cpu")  # the numba local updates run on the CPU
    device = cpu if plan.sampler.cpu_only else resolve_device(plan.device, world.local_rank)
    check_fits(plan.memory, device)
    path = replica_path(plan.out, plan.ensemble, world.rank)
    with WriterLock(path), runtime.stop_signals() as caught:
        payload = plan_start(plan.provenance, path, world.size, resume=resume, overwrite=overwrite)
        if overwrite:
            remove_outputs(plan, world, path)
        frozen = _any_rank(world, payload is not None)  # a resumed ensemble keeps its flow: no training
        ctx = BuildContext(device, plan.dtype, world, progress, stop=lambda: bool(caught), frozen=frozen)
        built = plan.sampler.build(plan.theory, ctx)
        if payload is not None and payload["model_hash"] != built.model_hash:
            raise JobError(f"{checkpoint_path(path)}: resume refused, the flow model "
                           f"{built.model_hash} differs from the {payload['model_hash']} this ensemble used")
        if caught or built.interrupted:
            return SampleOutcome(path, float("nan"), True, _session(built.train_s, 0.0, 0.0))
        return _sample(plan, world, path, payload, built, ctx, caught)


def _any_rank(world: World, flag: bool) -> bool:
    """``flag`` on any rank of a real MPI job (a ``World`` made by hand, as in tests, is one process)."""
    return any_rank(world, flag) if world.size > 1 and in_parallel() else flag


PHASES = ("therm_s", "sample_s", "therm_cpu_s", "sample_cpu_s")


def _sample(
    plan: JobPlan, world: World, path: Path, payload: dict[str, Any] | None, built: KernelBuild,
    ctx: BuildContext, caught: list[int],
) -> SampleOutcome:
    """Open (or reopen) the file and run the chains, checkpointing after every block with the cumulative
    cost of every phase, so that a killed session's cost up to its last checkpoint is kept."""
    sampling = plan.sampling
    generator = torch_generator(seed_sequence(plan.seed, world.rank, world.size), ctx.device)
    state = initial_state(built.kernel, plan.theory, sampling.n_chains, generator, ctx.dtype, ctx.device)
    writer, state, start = _open_writer(plan, world, path, payload, state, generator,
                                        rebuild=getattr(built.kernel, "init", None))
    base = {k: float((payload or {}).get("timing", {}).get(k, 0.0)) for k in PHASES}
    config_bytes = state.x[0].numel() * state.x.element_size() * sampling.n_chains
    schedule = Schedule(
        sampling.n_therm,
        sampling.n_configs,
        sampling.every,
        block=max(1, min(sampling.checkpoint_every, (64 << 20) // config_bytes)),
    )

    def totals(spent: Spent) -> dict[str, float]:
        return {k: base[k] + float(v) for k, v in zip(PHASES, spent, strict=True)}

    logged = [start.n_stored]

    def checkpoint(st: Any, pos: Position, spent: Spent) -> None:
        payload = _checkpoint_payload(plan, world, built.model_hash, st, generator, pos, totals(spent))
        save_atomic(payload, checkpoint_path(path))
        if pos.n_stored == logged[0]:
            return
        logged[0] = pos.n_stored
        log.info("%s: %d of %d configurations stored (update %d), checkpoint written",
                 path.name, pos.n_stored, sampling.n_configs, pos.update)

    log.info("sampling %s: %s, %d chain(s), %d configurations", path, plan.sampler.kind,
             sampling.n_chains, sampling.n_configs)
    complete, result = False, None
    try:
        result = run_chain(
            built.kernel,
            state,
            generator,
            schedule=schedule,
            measure=_measure_fn(plan),
            writer=writer,
            start=start,
            field_dtype=state.x.dtype,  # the kernel's own field dtype (complex for SU(N))
            on_block=checkpoint,
            stop_requested=lambda: bool(caught),
            progress=ctx.progress,
            rate=plan.sampler.rate,
        )
        complete = not result.interrupted
    finally:
        timing = None if result is None else run_timing(built, result, base)
        writer.close(complete=complete, timing=timing)
    return SampleOutcome(path, result.acceptance, result.interrupted,
                         _session(built.train_s, result.therm_s, result.sample_s))


def _session(train_s: float, therm_s: float, sample_s: float) -> dict[str, float]:
    return {"train_s": train_s, "therm_s": therm_s, "sample_s": sample_s}


def run_timing(
    built: KernelBuild, result: RunResult, base: dict[str, float] | None = None
) -> dict[str, float]:
    """The costs recorded in an ensemble file: wall-clock seconds and the process's CPU seconds (the
    robust measure on a shared machine) of training, thermalisation and sampling, cumulative over every
    session (``base``: the totals before this session)."""
    base = base or {}
    session = {
        "therm_s": result.therm_s,
        "sample_s": result.sample_s,
        "therm_cpu_s": result.therm_cpu_s,
        "sample_cpu_s": result.sample_cpu_s,
    }
    return {
        "train_s": built.train_s,
        "train_cpu_s": built.train_cpu_s,
        **{k: base.get(k, 0.0) + v for k, v in session.items()},
    }


__all__ = ["JobError", "World", "KernelBuild", "SampleOutcome", "sample_replica"]

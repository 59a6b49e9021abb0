"""One replica's sampling job: open or resume its file, build the kernel, run the driver, checkpoint."""

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
from mcmc.card import Card, CardError
from mcmc.driver import Position, RunResult, Schedule, Spent, run_chain, state_from_dict, state_to_dict
from mcmc.io.lock import WriterLock
from mcmc.io.store import EnsembleWriter, checkpoint_path, replica_path, save_atomic
from mcmc.kernels.hmc import HMC
from mcmc.kernels.local.registry import local_kernel_factory
from mcmc.parallel import any_rank, in_parallel
from mcmc.resume import BOTH_FLAGS, chain_settings, plan_start
from mcmc.runtime import JobError, KernelBuild, World, seed_sequence, torch_generator
from mcmc.setup import build_theory, resolve_device, resolve_dtype
from mcmc.training import discard_stale_flow, flow_kernel

log = logging.getLogger("latflow")


@dataclass(frozen=True)
class SampleOutcome:
    """Result of one replica's ``sample_replica``."""

    path: Path
    acceptance: float
    train_s: float
    therm_s: float
    sample_s: float
    interrupted: bool


def _measure_fn(card: Any, theory: Any) -> Any:
    """The in-stream measurement: the theory's observables plus the card's ``measure:`` groups."""
    from mcmc.measurement import stream_measure

    return stream_measure(theory, card.measure.obs, card.measure.params)


def build_kernel(
    card: Card,
    theory: Theory,
    device: torch.device,
    dtype: torch.dtype,
    world: World,
    progress: bool,
    *,
    stop: Callable[[], bool] = lambda: False,
    frozen: bool = False,
) -> KernelBuild:
    """The Markov kernel named by ``card.sampler.kind``; a flow is trained or loaded first (``stop``
    polled by distributed training turns true when the job is asked to stop; ``frozen``: the flow
    checkpoint must exist and is loaded as it is, never trained further, as a resumed ensemble needs)."""
    kind = card.sampler.kind
    if kind == "hmc":
        if card.hmc.compile:
            from mcmc.kernels.compiled import CompiledHMC

            return KernelBuild(CompiledHMC(theory, card.hmc.tau, card.hmc.n_steps, card.hmc.integrator))
        return KernelBuild(HMC(theory, card.hmc.tau, card.hmc.n_steps, card.hmc.integrator))
    if kind == "flow":
        return flow_kernel(card, theory, device, dtype, world, progress, stop=stop, frozen=frozen)
    if kind == "local":
        if card.device == "cuda":
            raise CardError("card: sampler.kind local runs on the CPU only (numba); set device: cpu")
        try:
            factory = local_kernel_factory(theory.name)
        except ValueError as exc:
            raise CardError(f"card: sampler.kind local: {exc}") from None
        return KernelBuild(factory(theory, **card.local.model_dump()))
    raise JobError(f"sampler.kind {kind!r} is not available")


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


def provenance(card: Card, world: World, ss_key: tuple[int, ...], theory: Theory) -> dict[str, Any]:
    """Root attributes of a replica file (DESIGN.md)."""
    return {
        "card": card.to_yaml(),
        "theory": json.dumps(card.theory.model_dump(mode="json")),
        "seed": card.seed,
        "spawn_key": json.dumps(list(ss_key)),
        "replica": world.rank,
        "n_replicas": world.size,
        "ensemble_id": f"{card.ensemble}|r{world.rank}",
        "sampler": card.sampler.kind,
        "physics_hash": card.physics_hash(),
        "n_configs_target": card.sample.n_configs,
    }


def remove_outputs(card: Card, world: World, path: Path) -> None:
    """``--overwrite`` (after every check passed): delete the old replica file and checkpoint, and on
    rank 0 a flow checkpoint that does not fit the card."""
    path.unlink(missing_ok=True)
    checkpoint_path(path).unlink(missing_ok=True)
    if card.sampler.kind == "flow" and world.rank == 0:
        discard_stale_flow(card)


def _checkpoint_payload(
    card: Card, world: World, model_hash: str, state: Any, generator: torch.Generator, pos: Position,
    timing: dict[str, float],
) -> dict[str, Any]:
    return {
        "state": state_to_dict(state),
        "generator": generator.get_state(),
        "update": pos.update,
        "n_stored": pos.n_stored,
        "physics_hash": card.physics_hash(),
        "model_hash": model_hash,
        "chain": chain_settings(card, world.size),
        "timing": timing,
    }


def _open_writer(
    card: Card,
    world: World,
    path: Path,
    payload: dict[str, Any] | None,
    theory: Theory,
    state: Any,
    generator: torch.Generator,
) -> tuple[EnsembleWriter, Any, Position]:
    """A new replica file, or (``payload``: the checked checkpoint) the old one truncated to the
    checkpoint, with the chain state and generator restored; returns the writer, the state and the
    position."""
    if payload is None:
        path.unlink(missing_ok=True)
        checkpoint_path(path).unlink(missing_ok=True)
        ss = seed_sequence(card.seed, world.rank, world.size)
        writer = EnsembleWriter.create(
            path,
            field_shape=tuple(state.x.shape[1:]),
            n_chains=card.sample.n_chains,
            field_dtype=str(state.x.dtype).removeprefix("torch."),
            obs_names=list(_measure_fn(card, theory)(state.x)),
            attrs=provenance(card, world, tuple(ss.spawn_key), theory),
            proposal_obs_names=tuple(getattr(state, "buffer_obs", None) or ()),
        )
        return writer, state, Position()
    writer = EnsembleWriter.reopen(
        path, payload["n_stored"], {"n_configs_target": card.sample.n_configs, "card": card.to_yaml()}
    )
    device = state.x.device
    saved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in payload["state"].items()}
    try:
        state = state_from_dict(state, saved)
    except ValueError as exc:
        raise JobError(f"{checkpoint_path(path)}: resume refused, {exc}") from None
    generator.set_state(payload["generator"])
    start = Position(payload["update"], payload["n_stored"])
    log.info("resuming %s at update %d with %d stored configurations", path, start.update, start.n_stored)
    return writer, state, start


def sample_replica(
    card: Card,
    world: World | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> SampleOutcome:
    """Generate (or continue) this rank's replica file of the ensemble described by ``card``.

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
    device, dtype = resolve_device(card.device, world.local_rank), resolve_dtype(card.dtype)
    if card.sampler.kind == "local":
        device = torch.device("cpu")  # the numba local updates run on the CPU
    check_fits(card, device)
    path = replica_path(card.out, card.ensemble, world.rank)
    with WriterLock(path), runtime.stop_signals() as caught:
        payload = plan_start(card, path, world.size, resume=resume, overwrite=overwrite)
        if overwrite:
            remove_outputs(card, world, path)
        theory = build_theory(card)
        frozen = _any_rank(world, payload is not None)  # a resumed ensemble keeps its flow: no training
        built = build_kernel(card, theory, device, dtype, world, progress, stop=lambda: bool(caught),
                             frozen=frozen)
        if payload is not None and payload["model_hash"] != built.model_hash:
            raise JobError(f"{checkpoint_path(path)}: resume refused, the flow model "
                           f"{built.model_hash} differs from the {payload['model_hash']} this ensemble used")
        if caught or built.interrupted:
            return SampleOutcome(path, float("nan"), built.train_s, 0.0, 0.0, True)
        return _sample(card, world, path, payload, built, theory, (device, dtype), caught, progress)


def _any_rank(world: World, flag: bool) -> bool:
    """``flag`` on any rank of a real MPI job (a ``World`` made by hand, as in tests, is one process)."""
    return any_rank(world, flag) if world.size > 1 and in_parallel() else flag


PHASES = ("therm_s", "sample_s", "therm_cpu_s", "sample_cpu_s")


def _sample(
    card: Card, world: World, path: Path, payload: dict[str, Any] | None, built: KernelBuild, theory: Theory,
    where: tuple[torch.device, torch.dtype], caught: list[int], progress: bool,
) -> SampleOutcome:
    """Open (or reopen) the file and run the chains, checkpointing after every block with the cumulative
    cost of every phase, so that a killed session's cost up to its last checkpoint is kept."""
    device, dtype = where
    generator = torch_generator(seed_sequence(card.seed, world.rank, world.size), device)
    state = initial_state(built.kernel, theory, card.sample.n_chains, generator, dtype, device)
    writer, state, start = _open_writer(card, world, path, payload, theory, state, generator)
    base = {k: float((payload or {}).get("timing", {}).get(k, 0.0)) for k in PHASES}
    config_bytes = state.x[0].numel() * state.x.element_size() * card.sample.n_chains
    schedule = Schedule(
        card.sample.n_therm,
        card.sample.n_configs,
        card.sample.every,
        block=max(1, min(card.sample.checkpoint_every, (64 << 20) // config_bytes)),
    )

    def totals(spent: Spent) -> dict[str, float]:
        return {k: base[k] + float(v) for k, v in zip(PHASES, spent, strict=True)}

    logged = [start.n_stored]

    def checkpoint(st: Any, pos: Position, spent: Spent) -> None:
        payload = _checkpoint_payload(card, world, built.model_hash, st, generator, pos, totals(spent))
        save_atomic(payload, checkpoint_path(path))
        if pos.n_stored == logged[0]:
            return
        logged[0] = pos.n_stored
        log.info("%s: %d of %d configurations stored (update %d), checkpoint written",
                 path.name, pos.n_stored, card.sample.n_configs, pos.update)

    log.info("sampling %s: %s, %d chain(s), %d configurations", path, card.sampler.kind,
             card.sample.n_chains, card.sample.n_configs)
    complete, result = False, None
    try:
        result = run_chain(
            built.kernel,
            state,
            generator,
            schedule=schedule,
            measure=_measure_fn(card, theory),
            writer=writer,
            start=start,
            field_dtype=state.x.dtype,  # the kernel's own field dtype (complex for SU(N))
            on_block=checkpoint,
            stop_requested=lambda: bool(caught),
            progress=progress,
            rate="accept_prob" if card.sampler.kind == "local" else "accepted",
        )
        complete = not result.interrupted
    finally:
        timing = None if result is None else run_timing(built, result, base)
        writer.close(complete=complete, timing=timing)
    return SampleOutcome(
        path, result.acceptance, built.train_s, result.therm_s, result.sample_s, result.interrupted
    )


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

"""One replica's sampling job: open or resume its file, build the kernel, run the driver, checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcmc.card import Card
from mcmc.driver import Position, RunResult, Schedule, run_chain, state_from_dict, state_to_dict
from mcmc.io.store import EnsembleWriter, StoreError, checkpoint_path, replica_path, save_atomic
from mcmc.kernels.hmc import HMC
from mcmc.setup import (
    build_theory,
    initial_field,
    resolve_device,
    resolve_dtype,
    seed_sequence,
    torch_generator,
)

log = logging.getLogger("latflow")


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


@dataclass(frozen=True)
class SampleOutcome:
    """Result of one replica's ``sample_replica``."""

    path: Path
    acceptance: float
    train_s: float
    therm_s: float
    sample_s: float
    interrupted: bool


def build_kernel(
    card: Card,
    theory: object,
    device: torch.device,
    dtype: torch.dtype,
    world: World,
    progress: bool,
    *,
    stop: Callable[[], bool] = lambda: False,
) -> KernelBuild:
    """The Markov kernel named by ``card.sampler.kind``; a flow is trained or loaded first (``stop``
    polled by distributed training turns true when the job is asked to stop)."""
    kind = card.sampler.kind
    if kind == "hmc":
        return KernelBuild(HMC(theory, card.hmc.tau, card.hmc.n_steps, card.hmc.integrator))
    if kind == "flow":
        from mcmc.training import flow_kernel

        return flow_kernel(card, theory, device, dtype, world, progress, stop=stop)
    if kind == "local":
        from mcmc.kernels.local.dispatch import local_kernel

        return KernelBuild(local_kernel(card, theory))
    raise JobError(f"sampler.kind {kind!r} is not available")


def initial_state(
    kernel: Any,
    theory: object,
    n_chains: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> Any:
    """Start B chains: flow chains at independent flow samples (already in equilibrium once one
    proposal is accepted), others at the theory's random start."""
    if hasattr(kernel, "init_from_flow"):
        return kernel.init_from_flow(n_chains, generator)
    return kernel.init(initial_field(theory, n_chains, generator, dtype, device))


def provenance(card: Card, world: World, ss_key: tuple[int, ...], theory: object) -> dict[str, Any]:
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


def prepare_outputs(card: Card, world: World, resume: bool, overwrite: bool) -> Path:
    """Check the replica file's path; with ``overwrite`` delete an old ensemble's file and checkpoint."""
    path = replica_path(card.out, card.ensemble, world.rank)
    if path.exists() and not (resume or overwrite):
        raise JobError(
            f"{path} already holds an ensemble; pass --resume to continue it or --overwrite to replace it"
        )
    if overwrite and not resume:
        path.unlink(missing_ok=True)
        checkpoint_path(path).unlink(missing_ok=True)
        if card.sampler.kind == "flow" and world.rank == 0:
            from mcmc.training import discard_stale_flow

            discard_stale_flow(card)
    return path


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


def chain_settings(card: Card, world: World) -> dict[str, int]:
    """Settings besides the physics hash that a resumed chain must share with its start."""
    settings = {
        "sample.n_therm": card.sample.n_therm,
        "sample.n_chains": card.sample.n_chains,
        "sample.every": card.sample.every,
        "n_replicas": world.size,
    }
    if card.sampler.kind == "flow":
        settings["sample.proposal_batch"] = card.sample.proposal_batch
    return settings


def _checkpoint_payload(
    card: Card, world: World, model_hash: str, state: Any, generator: torch.Generator, pos: Position
) -> dict[str, Any]:
    return {
        "state": state_to_dict(state),
        "generator": generator.get_state(),
        "update": pos.update,
        "n_stored": pos.n_stored,
        "physics_hash": card.physics_hash(),
        "model_hash": model_hash,
        "chain": chain_settings(card, world),
    }


def _check_resumable(ckpt: Path, payload: dict[str, Any], card: Card, world: World, model_hash: str) -> None:
    """Refuse a resume whose card changed anything but ``sample.n_configs`` (which may only grow)."""
    if payload["physics_hash"] != card.physics_hash():
        raise JobError(
            f"{ckpt}: resume refused, the card changed the theory, sampler, flow, seed or dtype "
            "since this ensemble was started (only sample.n_configs may grow)"
        )
    if payload["model_hash"] != model_hash:
        raise JobError(f"{ckpt}: resume refused, the flow model differs from the one this ensemble used")
    for key, was in payload.get("chain", {}).items():
        now = chain_settings(card, world).get(key)
        if now != was:
            raise JobError(
                f"{ckpt}: resume refused, {key} was {was} and is now {now} (only sample.n_configs may grow)"
            )
    if card.sample.n_configs < payload["n_stored"]:
        raise JobError(
            f"{ckpt}: resume refused, sample.n_configs = {card.sample.n_configs} is below the "
            f"{payload['n_stored']} configurations already stored (n_configs may only grow)"
        )


def _load_checkpoint(path: Path, card: Card, world: World, model_hash: str) -> dict[str, Any] | None:
    ckpt = checkpoint_path(path)
    if not ckpt.exists():
        return None
    payload = torch.load(ckpt, weights_only=True, map_location="cpu")
    _check_resumable(ckpt, payload, card, world, model_hash)
    return payload


def _open_writer(
    card: Card,
    world: World,
    path: Path,
    built: KernelBuild,
    theory: Any,
    state: Any,
    generator: torch.Generator,
) -> tuple[EnsembleWriter, Any, Position]:
    """A new replica file, or (``--resume`` with a checkpoint) the old one truncated to the checkpoint,
    with the chain state and generator restored; returns the writer, the state and the position."""
    payload = _load_checkpoint(path, card, world, built.model_hash) if path.exists() else None
    if payload is None:
        path.unlink(missing_ok=True)
        checkpoint_path(path).unlink(missing_ok=True)
        ss = seed_sequence(card.seed, world.rank, world.size)
        writer = EnsembleWriter.create(
            path,
            field_shape=tuple(state.x.shape[1:]),
            n_chains=card.sample.n_chains,
            field_dtype=str(state.x.dtype).removeprefix("torch."),
            obs_names=list(theory.observables(state.x)),
            attrs=provenance(card, world, tuple(ss.spawn_key), theory),
        )
        return writer, state, Position()
    writer = EnsembleWriter.reopen(
        path, payload["n_stored"], {"n_configs_target": card.sample.n_configs, "card": card.to_yaml()}
    )
    device = state.x.device
    state = state_from_dict(
        state, {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in payload["state"].items()}
    )
    generator.set_state(payload["generator"])
    start = Position(payload["update"], payload["n_stored"])
    log.info("resuming %s at update %d with %d stored configurations", path, start.update, start.n_stored)
    return writer, state, start


def sample_replica(
    card: Card,
    world: World = World(),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> SampleOutcome:
    """Generate (or continue) this rank's replica file of the ensemble described by ``card``.

    SIGTERM, SIGUSR1 and SIGINT stop the job cleanly: during sampling the current block is written
    and checkpointed; during (distributed) flow training the training checkpoint is written and no
    sampling starts. Either way the outcome is ``interrupted`` and ``--resume`` continues.
    """
    with stop_signals() as caught:
        path = prepare_outputs(card, world, resume, overwrite)
        device, dtype = resolve_device(card.device, world.local_rank), resolve_dtype(card.dtype)
        if card.sampler.kind == "local":
            device = torch.device("cpu")  # the numba local updates run on the CPU
        theory = build_theory(card)
        built = build_kernel(card, theory, device, dtype, world, progress, stop=lambda: bool(caught))
        if caught or built.interrupted:
            return SampleOutcome(path, float("nan"), built.train_s, 0.0, 0.0, True)
        generator = torch_generator(seed_sequence(card.seed, world.rank, world.size), device)
        state = initial_state(built.kernel, theory, card.sample.n_chains, generator, dtype, device)
        writer, state, start = _open_writer(card, world, path, built, theory, state, generator)
        config_bytes = state.x[0].numel() * state.x.element_size() * card.sample.n_chains
        schedule = Schedule(
            card.sample.n_therm,
            card.sample.n_configs,
            card.sample.every,
            block=max(1, min(card.sample.checkpoint_every, (64 << 20) // config_bytes)),
        )

        def checkpoint(st: Any, pos: Position) -> None:
            payload = _checkpoint_payload(card, world, built.model_hash, st, generator, pos)
            save_atomic(payload, checkpoint_path(path))

        complete, result = False, None
        try:
            result = run_chain(
                built.kernel,
                state,
                generator,
                schedule=schedule,
                measure=theory.observables,
                writer=writer,
                start=start,
                field_dtype=state.x.dtype,  # the kernel's own field dtype (complex for SU(N))
                on_block=checkpoint,
                stop_requested=lambda: bool(caught),
                progress=progress,
            )
            complete = not result.interrupted
        finally:
            timing = None if result is None else run_timing(built, result)
            writer.close(complete=complete, timing=timing)
    return SampleOutcome(
        path, result.acceptance, built.train_s, result.therm_s, result.sample_s, result.interrupted
    )


def run_timing(built: KernelBuild, result: RunResult) -> dict[str, float]:
    """The costs recorded in an ensemble file: wall-clock seconds and the process's CPU seconds (the
    robust measure on a shared machine) of training, thermalisation and sampling."""
    return {
        "train_s": built.train_s,
        "therm_s": result.therm_s,
        "sample_s": result.sample_s,
        "train_cpu_s": built.train_cpu_s,
        "therm_cpu_s": result.therm_cpu_s,
        "sample_cpu_s": result.sample_cpu_s,
    }


def model_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of a model's parameters, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["JobError", "StoreError", "World", "KernelBuild", "SampleOutcome", "sample_replica", "model_hash"]

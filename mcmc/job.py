"""One replica's sampling job: open or resume its file, build the kernel, run the driver, checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcmc.build import (
    build_theory,
    initial_field,
    resolve_device,
    resolve_dtype,
    seed_sequence,
    torch_generator,
)
from mcmc.card import Card
from mcmc.driver import Position, Schedule, run_chain, state_from_dict, state_to_dict
from mcmc.hmc import HMC
from mcmc.store import EnsembleWriter, StoreError, checkpoint_path, replica_path, save_atomic

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
    card: Card, theory: object, device: torch.device, dtype: torch.dtype, world: World, progress: bool
) -> KernelBuild:
    """The Markov kernel named by ``card.sampler.kind``; a flow is trained or loaded first."""
    kind = card.sampler.kind
    if kind == "hmc":
        return KernelBuild(HMC(theory, card.hmc.tau, card.hmc.n_steps, card.hmc.integrator))
    if kind == "flow":
        from mcmc.flowjob import flow_kernel

        return flow_kernel(card, theory, device, dtype, world, progress)
    if kind == "local":
        from mcmc.local import local_kernel

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


def _checkpoint_payload(
    card: Card, model_hash: str, state: Any, generator: torch.Generator, pos: Position
) -> dict[str, Any]:
    return {
        "state": state_to_dict(state),
        "generator": generator.get_state(),
        "update": pos.update,
        "n_stored": pos.n_stored,
        "physics_hash": card.physics_hash(),
        "model_hash": model_hash,
    }


def _load_checkpoint(path: Path, card: Card, model_hash: str) -> dict[str, Any] | None:
    ckpt = checkpoint_path(path)
    if not ckpt.exists():
        return None
    payload = torch.load(ckpt, weights_only=True, map_location="cpu")
    if payload["physics_hash"] != card.physics_hash():
        raise JobError(
            f"{ckpt}: resume refused, the card changed the theory, sampler, flow, seed or dtype "
            "since this ensemble was started (only sample.n_configs may grow)"
        )
    if payload["model_hash"] != model_hash:
        raise JobError(f"{ckpt}: resume refused, the flow model differs from the one this ensemble used")
    return payload


def sample_replica(
    card: Card,
    world: World = World(),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> SampleOutcome:
    """Generate (or continue) this rank's replica file of the ensemble described by ``card``."""
    path = prepare_outputs(card, world, resume, overwrite)
    device, dtype = resolve_device(card.device, world.local_rank), resolve_dtype(card.dtype)
    if card.sampler.kind == "local":
        device = torch.device("cpu")  # the numba local updates run on the CPU
    theory = build_theory(card)
    built = build_kernel(card, theory, device, dtype, world, progress)
    ss = seed_sequence(card.seed, world.rank, world.size)
    generator = torch_generator(ss, device)
    state = initial_state(built.kernel, theory, card.sample.n_chains, generator, dtype, device)
    payload = _load_checkpoint(path, card, built.model_hash) if resume and path.exists() else None
    if payload is None:
        path.unlink(missing_ok=True)
        checkpoint_path(path).unlink(missing_ok=True)
        writer = EnsembleWriter.create(
            path,
            field_shape=tuple(state.x.shape[1:]),
            n_chains=card.sample.n_chains,
            field_dtype=str(state.x.dtype).removeprefix("torch."),
            obs_names=list(theory.observables(state.x)),
            attrs=provenance(card, world, tuple(ss.spawn_key), theory),
        )
        start = Position()
    else:
        writer = EnsembleWriter.reopen(path, payload["n_stored"])
        writer.set_attrs(n_configs_target=card.sample.n_configs, card=card.to_yaml())
        state = state_from_dict(
            state,
            {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in payload["state"].items()},
        )
        generator.set_state(payload["generator"])
        start = Position(payload["update"], payload["n_stored"])
        log.info("resuming %s at update %d with %d stored configurations", path, start.update, start.n_stored)
    config_bytes = state.x[0].numel() * state.x.element_size() * card.sample.n_chains
    schedule = Schedule(
        card.sample.n_therm,
        card.sample.n_configs,
        card.sample.every,
        block=max(1, min(card.sample.checkpoint_every, (64 << 20) // config_bytes)),
    )

    def checkpoint(st: Any, pos: Position) -> None:
        save_atomic(_checkpoint_payload(card, built.model_hash, st, generator, pos), checkpoint_path(path))

    complete = False
    try:
        with stop_signals() as caught:
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
        writer.close(complete=complete)
    return SampleOutcome(
        path, result.acceptance, built.train_s, result.therm_s, result.sample_s, result.interrupted
    )


def model_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of a model's parameters, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["JobError", "StoreError", "World", "KernelBuild", "SampleOutcome", "sample_replica", "model_hash"]

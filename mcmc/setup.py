"""The edge where the run card ends: a validated ``Card`` becomes a ``mcmc.plan.JobPlan`` of plain values.

This is the only module below the application (``mcmc.cli``, ``mcmc.compare``) that reads a ``Card``,
and the only place that maps ``sampler.kind`` to a sampler spec (``SPECS``) and a theory name to its
flow family and local kernel (through the registries ``flows.registry`` and
``mcmc.kernels.local.registry``; the theory itself through ``lattice.theories``). Every check of the
card that needs the theory or the machine runs here, before any file is touched: a device the machine
lacks, a sampler the theory has no kernel or flow for, flow and training keys the flow family refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flows.accel import AccelConfig
from flows.registry import FlowFamily, flow_family
from flows.train import TrainConfig
from lattice.theories import Theory, theory_from_params
from mcmc.budget import MemoryNeed, config_elements, flow_bytes, hmc_bytes, local_bytes
from mcmc.card import Card, CardError, section_settings, stage_cards
from mcmc.kernels.local.registry import local_kernel_factory
from mcmc.plan import HMCSpec, JobPlan, LocalSpec, Provenance, SamplerSpec, Sampling
from mcmc.training import FlowSpec, Stage


def resolve_dtype(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[name]


def build_theory(card: Card) -> Theory:
    """The theory object described by ``card.theory``."""
    return theory_from_params(card.theory.model_dump())


def check_device(name: str) -> None:
    """Refuse ``device: cuda`` on a machine without CUDA (``auto`` falls back to the CPU)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise CardError("card: device: cuda was requested but no CUDA device is available here; "
                        "use device: cpu or auto")


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


def flow_path(card: Card) -> Path:
    """``<out>/<ensemble>.flow.pt``."""
    return Path(card.out) / f"{card.ensemble}.flow.pt"


def flow_spec(card: Card) -> FlowSpec:
    """The flow sampler of ``card``, with one stage per ``train.stages`` entry."""
    return FlowSpec(
        family=family(card),
        flow_config=flow_config(card),
        train_config=train_config(card),
        path=flow_path(card),
        plots=Path(card.out) / "plots",
        seed=card.seed,
        accel=AccelConfig.from_mapping(card.accel.model_dump()),
        stages=tuple(Stage(build_theory(stage), flow_spec(stage)) for stage in stage_cards(card)),
        proposal_batch=card.sample.proposal_batch,
        buffer_bytes=max(1, int(card.sample.buffer_mb * 2**20)),
        refill_seconds=card.sample.refill_seconds,
    )


def hmc_spec(card: Card) -> HMCSpec:
    return HMCSpec(card.hmc.tau, card.hmc.n_steps, card.hmc.integrator, card.hmc.compile)


def local_spec(card: Card) -> LocalSpec:
    """The local updates of the card's theory (``mcmc.kernels.local.registry``), CPU only."""
    if card.device == "cuda":
        raise CardError("card: sampler.kind local runs on the CPU only (numba); set device: cpu")
    try:
        factory = local_kernel_factory(card.theory.name)
    except ValueError as exc:
        raise CardError(f"card: sampler.kind local: {exc}") from None
    return LocalSpec(factory, card.local.model_dump())


SPECS: dict[str, Callable[[Card], SamplerSpec]] = {"hmc": hmc_spec, "local": local_spec, "flow": flow_spec}


def sampler_spec(card: Card) -> SamplerSpec:
    """The sampler spec of ``card.sampler.kind`` (the one dispatch on the kind)."""
    return SPECS[card.sampler.kind](card)


def memory_need(card: Card, theory: Theory) -> MemoryNeed:
    """The run's estimated peak memory (``mcmc.budget``) for the card's sampler."""
    elements, chains, kind = config_elements(theory), card.sample.n_chains, card.sampler.kind
    if kind == "hmc":
        need = hmc_bytes(chains, elements, 8 if card.dtype == "float64" else 4)
    elif kind == "local":
        need = local_bytes(chains, elements)
    else:
        batch = card.train.batch_size_max or card.train.batch_size
        need = flow_bytes(chains, elements, batch, card.flow.n_layers)
    what = f"{kind}, {chains} chain(s) of {card.theory.name} on {'x'.join(map(str, card.theory.shape))}"
    return MemoryNeed(need, what, on_cpu=kind == "local")


def provenance(card: Card) -> Provenance:
    """What the replica files record of ``card`` and what ``--resume`` compares with it."""
    kind = card.sampler.kind
    flow = kind == "flow"
    absent = getattr(card, kind).absent_as()  # keys added to the sampler's section later (Section)
    return Provenance(
        card_yaml=card.to_yaml(),
        theory_json=json.dumps(card.theory.model_dump(mode="json")),
        physics_hash=card.physics_hash(),
        tree=card.model_dump(mode="json"),
        fixed_sections=("theory", "sampler", kind, "seed", "dtype", *(("train",) if flow else ())),
        chain_keys=("n_therm", "n_chains", "every", *(("proposal_batch",) if flow else ())),
        absent_as={f"{kind}.{k}": v for k, v in absent.items()},
        legacy_hashes=card.legacy_hashes(),
    )


def job_plan(card: Card, *, train: bool = False) -> JobPlan:
    """The plan of a job for ``card``: checks everything that can be checked without files (module
    docstring) and touches none. ``train``: the job of ``latflow train``, whose sampler is the card's
    flow whatever ``sampler.kind`` says."""
    check_device(card.device)
    theory = build_theory(card)
    s = card.sample
    return JobPlan(
        theory=theory,
        sampler=flow_spec(card) if train else sampler_spec(card),
        sampling=Sampling(s.n_configs, s.n_therm, s.n_chains, s.every, s.checkpoint_every),
        seed=card.seed,
        out=card.out,
        ensemble=card.ensemble,
        device=card.device,
        dtype=resolve_dtype(card.dtype),
        memory=memory_need(card, theory),
        provenance=provenance(card),
        measure_obs=tuple(card.measure.obs),
        measure_params=card.measure.params,
    )

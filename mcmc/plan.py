"""A job's plan: what ``mcmc.setup`` makes of a validated run card, as plain frozen values.

Everything below the edge (the job, training, resume and budget modules) takes a ``JobPlan`` or the
pieces of it it needs, never the card. The sampler is a spec (``HMCSpec``, ``LocalSpec``, or
``mcmc.training.FlowSpec``) that builds its own kernel, so no module below ``mcmc.setup`` dispatches on
``sampler.kind``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from lattice.theories import Theory
from mcmc.budget import MemoryNeed
from mcmc.kernels.hmc import HMC
from mcmc.runtime import BuildContext, KernelBuild


class SamplerSpec(Protocol):
    """A sampler's settings and how to make its kernel; ``kind`` is the card's ``sampler.kind`` (a label
    for files and logs), ``cpu_only`` whether its kernel runs on the CPU whatever the card's device, and
    ``rate`` the step-record field the driver reports as the acceptance."""

    kind: ClassVar[str]
    cpu_only: ClassVar[bool]
    rate: ClassVar[str]

    def build(self, theory: Theory, ctx: BuildContext) -> KernelBuild: ...

    def discard_stale(self, theory: Theory) -> bool: ...


@dataclass(frozen=True)
class HMCSpec:
    """HMC with trajectory length ``tau`` in ``n_steps`` steps of ``integrator``; ``compile``: the fused
    trajectory of ``mcmc.kernels.compiled``."""

    tau: float
    n_steps: int
    integrator: str
    compile: bool = False
    kind: ClassVar[str] = "hmc"
    cpu_only: ClassVar[bool] = False
    rate: ClassVar[str] = "accepted"

    def build(self, theory: Theory, ctx: BuildContext) -> KernelBuild:
        if self.compile:
            from mcmc.kernels.compiled import CompiledHMC

            return KernelBuild(CompiledHMC(theory, self.tau, self.n_steps, self.integrator))
        return KernelBuild(HMC(theory, self.tau, self.n_steps, self.integrator))

    def discard_stale(self, theory: Theory) -> bool:
        return False


@dataclass(frozen=True)
class LocalSpec:
    """Local updates: the theory's kernel ``factory`` (``mcmc.kernels.local.registry``) called with the
    card's ``local`` settings; numba code on the CPU."""

    factory: Callable[..., Any]
    settings: Mapping[str, Any]
    kind: ClassVar[str] = "local"
    cpu_only: ClassVar[bool] = True
    rate: ClassVar[str] = "accept_prob"  # the mean Metropolis probability over sites

    def build(self, theory: Theory, ctx: BuildContext) -> KernelBuild:
        return KernelBuild(self.factory(theory, **self.settings))

    def discard_stale(self, theory: Theory) -> bool:
        return False


@dataclass(frozen=True)
class Sampling:
    """The sampling schedule: ``n_therm`` updates unrecorded, then ``n_configs`` stored configurations
    of ``n_chains`` chains, one every ``every`` updates, with a checkpoint at least every
    ``checkpoint_every`` stored ones."""

    n_configs: int
    n_therm: int
    n_chains: int
    every: int
    checkpoint_every: int


@dataclass(frozen=True)
class Provenance:
    """What a replica file records of the card, and what ``--resume`` compares: the resolved card as
    YAML and as a plain dict ``tree``, the theory as JSON, the physics hash, the card sections a resumed
    ensemble must keep (``fixed_sections``), the ``sample`` keys its chains must share (``chain_keys``),
    and ``absent_as``: dotted keys added to the card later, with the value a stored card that lacks them
    is taken to hold (``mcmc.card_sections.Section.ADDED_KEYS``); ``legacy_hashes``: earlier physics hashes
    of the same chain that a stored checkpoint may carry (``mcmc.card.Card.legacy_hashes``)."""

    card_yaml: str
    theory_json: str
    physics_hash: str
    tree: Mapping[str, Any]
    fixed_sections: tuple[str, ...]
    chain_keys: tuple[str, ...]
    absent_as: Mapping[str, Any] = field(default_factory=dict)
    legacy_hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobPlan:
    """One job as plain values: the ``theory``, the ``sampler`` spec, the ``sampling`` schedule, the
    seed, the output directory ``out`` and ``ensemble`` name (files ``<out>/<ensemble>.r<rank>.h5``), the
    card's device name (auto, cpu, cuda; resolved per rank by ``mcmc.runtime.resolve_device``) and the
    chains' ``dtype``, the in-stream measurement (``measure_obs`` groups with ``measure_params``), the
    memory estimate and the provenance."""

    theory: Theory
    sampler: SamplerSpec
    sampling: Sampling
    seed: int
    out: str
    ensemble: str
    device: str
    dtype: torch.dtype
    memory: MemoryNeed
    provenance: Provenance
    measure_obs: tuple[str, ...] = ()
    measure_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

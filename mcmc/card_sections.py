"""The sections of a run card (DESIGN.md, "Run card"): one frozen pydantic model per section, each
with the defaults and bounds of its keys. ``mcmc.card`` assembles them into ``Card`` and reads YAML.

The theory section is derived from the registered theory's dataclass (``theory_card``), the ``flow`` and
``train`` sections from the flow families' configs and ``TrainConfig`` (``_optional_section``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from flows.registry import flow_families
from flows.train import TrainConfig
from lattice.theories import theory_class, theory_from_params


class CardError(ValueError):
    """A run card that cannot be used; the message is one line, fit for the terminal."""


class Section(BaseModel):
    """The base of every card section: unknown keys are refused, the model is frozen.

    ``ADDED_KEYS``: keys added to the section after ensembles were made without them, each with the
    value that makes the chain those ensembles ran. A key at that value (``absent_as``) is left out of
    the physics hash (``hashed``), and a stored card without it matches (``--resume``), so old ensembles
    keep their hash and resume.
    """

    # every float of every section must be finite: NaN or ±Inf is refused at the edge
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    ADDED_KEYS: ClassVar[dict[str, Any]] = {}

    def absent_as(self) -> dict[str, Any]:
        """The value each later-added key had, in effect, in a card written before it existed."""
        return dict(self.ADDED_KEYS)

    def hashed(self) -> dict[str, Any]:
        """The keys that define the chain: all but the added keys at their ``absent_as`` value."""
        old = self.absent_as()
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in old or v != old[k]}


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 0:
        raise ValueError("must list at least one extent")
    bad = [s for s in shape if s < 2]
    if bad:
        raise ValueError(f"extents must be at least 2 (a periodic lattice needs two sites), got {bad[0]}")
    return shape


class TheoryCard(Section):
    """The ``theory`` section: ``name`` (a registered theory) and the lattice ``shape`` first, then the
    fields of that theory's dataclass (``theory_card``); the theory's own checks run on validation."""

    name: str
    shape: tuple[int, ...]
    _shape = field_validator("shape")(classmethod(lambda cls, v: _check_shape(v)))

    @model_validator(mode="after")
    def _theory_accepts(self) -> TheoryCard:
        theory_from_params(self.model_dump())  # the theory's __post_init__ checks (ValueError)
        return self


_THEORY_CARDS: dict[type, type[TheoryCard]] = {}


def theory_card(name: str) -> type[TheoryCard]:
    """The card model of the registered theory ``name``, derived from its dataclass fields (types from
    the annotations, defaults from the dataclass); ``CardError`` for an unknown name."""
    try:
        cls = theory_class(name)
    except ValueError as exc:
        raise CardError(f"card: 'theory.name': {exc}") from None
    if cls not in _THEORY_CARDS:
        hints = typing.get_type_hints(cls)
        fields_: dict[str, Any] = {"name": (Literal[name], ...)}
        for f in dataclasses.fields(cls):
            if f.name not in ("name", "shape"):
                default = ... if f.default is dataclasses.MISSING else f.default
                fields_[f.name] = (hints[f.name], default)
        _THEORY_CARDS[cls] = create_model(f"{cls.__name__}Card", __base__=TheoryCard, **fields_)
    return _THEORY_CARDS[cls]


class SamplerCard(Section):
    kind: Literal["flow", "hmc", "local"] = "hmc"


class HMCCard(Section):
    tau: float = Field(default=1.0, gt=0)
    n_steps: int = Field(default=10, ge=1)
    integrator: Literal["leapfrog", "omelyan"] = "omelyan"
    compile: bool = False  # fused trajectory (torch.compile; CUDA graphs on GPUs): mcmc.kernels.compiled
    ADDED_KEYS: ClassVar[dict[str, Any]] = {"compile": False}


class AccelCard(Section):
    """GPU training options (``flows.accel``); null: automatic (TF32 and channels-last on CUDA only)."""

    tf32: bool | None = None
    autocast: Literal["off", "bf16"] | None = None
    channels_last: bool | None = None
    compile: bool | Literal["off", "nets", "flow"] = False  # true = nets; flow: whole layers (flows.accel)
    proposal_dtype: Literal["float64", "float32"] | None = None  # null = float64 map (flows.proposal)


class LocalCard(Section):
    """Local-update baselines (``sampler.kind: local``, ``mcmc.kernels.local``).

    φ⁴: ``n_hits`` Metropolis hits per site and sweep, proposals φ → φ + δ(2u − 1) with δ = ``step_size``
    (``None``: δ = 2.5 / sqrt(2(2D + |m²|)), 2.5 widths of the site-local Gaussian). Gauge theories: one
    heatbath sweep then ``n_overrelax`` overrelaxation sweeps per update. ``cluster: wolff`` (φ⁴ only) adds
    ``n_clusters`` Wolff single-cluster flips of the embedded Ising signs after each sweep
    (``mcmc.kernels.local.phi4.WolffPhi4``).
    """

    n_hits: int = Field(default=3, ge=1)
    step_size: float | None = Field(default=None, gt=0)
    n_overrelax: int = Field(default=2, ge=0)
    cluster: Literal["wolff"] | None = None
    n_clusters: int = Field(default=1, ge=1)

    def absent_as(self) -> dict[str, Any]:
        """The cluster keys, absent from cards older than them, meant no cluster update (whatever
        ``n_clusters`` says then); with a cluster update on, both count."""
        return {"cluster": None, "n_clusters": self.n_clusters} if self.cluster is None else {}


def _optional_section(name: str, doc: str, *configs: type) -> type[BaseModel]:
    """A card section whose keys are the union of the fields of ``configs`` (frozen dataclasses).

    Every key defaults to None, meaning "the builder's default"; the keys a given theory's builder
    accepts are checked by ``section_settings``. Deriving the section from the dataclasses keeps the
    card and the library from drifting apart.
    """
    fields_: dict[str, Any] = {}
    for config in configs:
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            fields_.setdefault(f.name, (hints[f.name] | None, None))
    return create_model(name, __base__=Section, __doc__=doc, **fields_)


_FlowBase = _optional_section(
    "_FlowBase", "The keys of FlowCard: the fields of every flow family's config.",
    *(family.config for family in flow_families().values()))


class FlowCard(_FlowBase):
    """Flow architecture; unset keys take the defaults of the theory's flow family (``flows.registry``;
    its config's keys are checked by ``section_settings``)."""

    ADDED_KEYS: ClassVar[dict[str, Any]] = {"stick_basis": None}


_TrainBase = _optional_section(
    "_TrainBase", "Reverse-KL training; unset keys take the defaults of flows.train.TrainConfig.",
    TrainConfig)


class TrainCard(_TrainBase):
    """Reverse-KL training. The card default budget is 600 s of training."""

    max_seconds: float | None = Field(default=600.0, gt=0)
    # bounds checked here, before any work (the optimizer would only fail once training starts)
    lr: float | None = Field(default=None, gt=0)
    lr_final_factor: float | None = Field(default=None, ge=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    batch_size_max: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=0)
    log_every: int | None = Field(default=None, ge=1)


def section_settings(section: BaseModel, config: type, label: str) -> dict[str, Any]:
    """The keys set in a card section, as a mapping for ``config.from_mapping``.

    Raises ``CardError`` naming a key that is set but which ``config`` does not accept (for example
    ``flow.bound`` for a U(1) flow), and turns the config's own value checks into ``CardError``.
    """
    accepted = {f.name for f in dataclasses.fields(config)}
    values = {k: v for k, v in section.model_dump().items() if v is not None}
    extra = sorted(set(values) - accepted)
    if extra:
        raise CardError(f"card: '{label}.{extra[0]}' is not used by {config.__name__} "
                        f"(accepted: {', '.join(sorted(accepted))})")
    try:
        config.from_mapping(values)
    except (ValueError, TypeError) as exc:
        raise CardError(f"card: {label}: {exc}") from None
    return values


class MeasureCard(Section):
    """Observables measured in-stream on every stored configuration, besides the theory's own:
    ``obs`` lists groups of ``observables.groups`` (``correlators``, ``wilson_loops``, ``polyakov_corr``,
    ``gradient_flow``) or ``module:function``; ``params`` maps a group to its parameters. The
    per-configuration primaries are stored as ``obs/<group>:<primary>`` and reported like
    ``latflow measure --obs``."""

    obs: list[str] = []
    params: dict[str, dict[str, Any]] = {}

    @field_validator("obs")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        from observables.groups import BUILTIN

        for name in names:
            if ":" not in name and name not in BUILTIN:
                accepted = sorted(BUILTIN)
                raise ValueError(f"unknown observable group {name!r}; accepted: {accepted} or mod:function")
        return names


class SampleCard(Section):
    n_configs: int = Field(default=10000, ge=1)
    n_therm: int = Field(default=500, ge=0)
    n_chains: int = Field(default=1, ge=1)
    every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=1000, ge=1)
    proposal_batch: int = Field(default=1024, ge=1)
    buffer_mb: float = Field(default=1024.0, gt=0)
    refill_seconds: float | None = Field(default=2.0, gt=0)
    progress: bool = True

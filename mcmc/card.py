"""Run cards: YAML parsed once into frozen, validated pydantic models (DESIGN.md, "Run card").

Every section except ``theory`` has defaults. An unknown key, a wrong type or a bad value raises
``CardError`` whose one-line message names the dotted key and what it accepts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from flows.registry import flow_families
from flows.train import TrainConfig
from lattice.theories import theory_class, theory_from_params


class CardError(ValueError):
    """A run card that cannot be used; the message is one line, fit for the terminal."""


class _Section(BaseModel):
    # every float of every section must be finite: NaN or ±Inf is refused at the edge
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 0:
        raise ValueError("must list at least one extent")
    bad = [s for s in shape if s < 2]
    if bad:
        raise ValueError(f"extents must be at least 2 (a periodic lattice needs two sites), got {bad[0]}")
    return shape


class TheoryCard(_Section):
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


class SamplerCard(_Section):
    kind: Literal["flow", "hmc", "local"] = "hmc"


class HMCCard(_Section):
    tau: float = Field(default=1.0, gt=0)
    n_steps: int = Field(default=10, ge=1)
    integrator: Literal["leapfrog", "omelyan"] = "omelyan"
    compile: bool = False  # fused trajectory (torch.compile; CUDA graphs on GPUs): mcmc.kernels.compiled


class AccelCard(_Section):
    """GPU training options (``flows.accel``); null: automatic (TF32 and channels-last on CUDA only)."""

    tf32: bool | None = None
    autocast: Literal["off", "bf16"] | None = None
    channels_last: bool | None = None
    compile: bool = False


class LocalCard(_Section):
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

    def hashed(self) -> dict[str, Any]:
        """The keys that define the chain; the cluster keys only when a cluster update is on, so that
        the physics hash of a plain Metropolis card is what it was before they existed."""
        values = self.model_dump(mode="json")
        if self.cluster is None:
            del values["cluster"], values["n_clusters"]
        return values


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
    return create_model(name, __base__=_Section, __doc__=doc, **fields_)


FlowCard = _optional_section(
    "FlowCard", "Flow architecture; unset keys take the defaults of the theory's flow family "
    "(flows.registry; its config's keys are checked by section_settings).",
    *(family.config for family in flow_families().values()))
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


class MeasureCard(_Section):
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


class SampleCard(_Section):
    n_configs: int = Field(default=10000, ge=1)
    n_therm: int = Field(default=500, ge=0)
    n_chains: int = Field(default=1, ge=1)
    every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=1000, ge=1)
    proposal_batch: int = Field(default=1024, ge=1)
    buffer_mb: float = Field(default=1024.0, gt=0)
    refill_seconds: float | None = Field(default=2.0, gt=0)
    progress: bool = True


class Card(_Section):
    theory: SerializeAsAny[TheoryCard]  # an instance of the named theory's ``theory_card`` (parse_card)

    @field_validator("theory", mode="before")
    @classmethod
    def _named_theory(cls, value: Any) -> Any:
        """A mapping is validated by the card model of the theory it names (``parse_card`` does this
        first, for its error messages; this covers ``Card.model_validate``)."""
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return theory_card(value["name"]).model_validate(value)
        return value
    sampler: SamplerCard = SamplerCard()
    hmc: HMCCard = HMCCard()
    local: LocalCard = LocalCard()
    flow: FlowCard = FlowCard()
    train: TrainCard = TrainCard()
    accel: AccelCard = AccelCard()
    sample: SampleCard = SampleCard()
    measure: MeasureCard = MeasureCard()
    seed: int = Field(default=1234, ge=0, lt=2**63)  # stored as an int64 attribute
    out: str = "runs/out/latflow"
    name: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float64", "float32"] = "float64"

    @property
    def ensemble(self) -> str:
        """Ensemble name: ``name`` if given, else the last component of ``out``."""
        return self.name or Path(self.out).name

    def to_yaml(self) -> str:
        """The fully resolved card, as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def physics_hash(self) -> str:
        """Hash of what defines the Markov chain: theory, sampler, the settings section of that sampler
        (``hmc``, ``flow`` or ``local``), seed and dtype. A trained flow is checked by its own hash."""
        keys = ("theory", "sampler", self.sampler.kind, "seed", "dtype")
        values = {k: self.model_dump(mode="json")[k] for k in keys}
        if self.sampler.kind == "local":
            values["local"] = self.local.hashed()
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parse_value(text: str) -> Any:
    """A ``--set`` value is parsed as YAML, so ``8``, ``-4.0``, ``[8, 8]`` and ``true`` keep their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set a.b=value`` overrides to a raw card dict; returns a new dict."""
    result = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise CardError(f"--set {item!r}: expected key=value, e.g. sample.n_configs=20000")
        key, value = item.split("=", 1)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CardError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return result


def _describe(error: dict, model: type[BaseModel], prefix: tuple[str, ...]) -> str:
    """One-line description of one pydantic error of ``model`` (the section at dotted path ``prefix``),
    naming the dotted key and what it accepts."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join([*prefix, *loc]) or "card"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' (accepted here: {', '.join(_accepted_keys(model, loc[:-1]))})"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    return f"'{key}': {error['msg']} (got {error.get('input')!r})"


def _accepted_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the section at ``loc`` inside ``model``."""
    section: Any = model
    for part in loc:
        field = section.model_fields.get(part) if hasattr(section, "model_fields") else None
        if field is None:
            return ["?"]
        section = field.annotation
    return list(section.model_fields) if hasattr(section, "model_fields") else ["?"]


def _validate(model: type[BaseModel], raw: Any, prefix: tuple[str, ...] = ()) -> Any:
    """``model.model_validate(raw)``; the first problem becomes a one-line ``CardError``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise CardError(f"card: {_describe(exc.errors()[0], model, prefix)}{more}") from None


def parse_card(raw: Any, overrides: list[str] | None = None) -> Card:
    """Validate a raw card (dict from YAML) with ``--set`` overrides into a frozen ``Card``. The theory
    section is validated first, by the card model of the theory it names."""
    if not isinstance(raw, dict):
        raise CardError("a run card must be a YAML mapping with at least a 'theory' section")
    raw = apply_overrides(raw, overrides or [])
    theory = raw.get("theory")
    if isinstance(theory, dict):
        if "name" not in theory:
            raise CardError("card: missing key 'theory.name'")
        if not isinstance(theory["name"], str):
            raise CardError(f"card: 'theory.name': expected a theory name, got {theory['name']!r}")
        raw = {**raw, "theory": _validate(theory_card(theory["name"]), theory, ("theory",))}
    card = _validate(Card, raw)
    stage_cards(card)  # a bad curriculum stops the run here, before any work
    return card


def stage_cards(card: Card) -> list[Card]:
    """One card per stage of ``card.train.stages`` (none without stages), with the stage's overrides,
    ``train.stages`` unset and ``name`` ``<ensemble>.stage<i>``; a key that is neither a theory key nor a
    training key, or a bad value, raises ``CardError`` naming it."""
    stages = card.train.stages or ()
    theory_keys = set(type(card.theory).model_fields) - {"name"}
    train_keys = set(TrainConfig.__dataclass_fields__) - {"stages"}
    base = card.model_dump(mode="json")
    cards = []
    for i, stage in enumerate(stages):
        unknown = sorted(set(stage) - theory_keys - train_keys)
        if unknown:
            raise CardError(f"card: train.stages[{i}].{unknown[0]} is neither a theory key "
                            f"({', '.join(sorted(theory_keys))}) nor a training key")
        data = {**base, "name": f"{card.ensemble}.stage{i}"}
        data["theory"] = {**base["theory"], **{k: v for k, v in stage.items() if k in theory_keys}}
        overrides = {k: v for k, v in stage.items() if k in train_keys}
        data["train"] = {**base["train"], "stages": None, **overrides}
        try:
            cards.append(Card.model_validate(data))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise CardError(f"card: train.stages[{i}]: {where}: {err['msg']}") from None
    return cards


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: the problem and its line (and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def read_yaml(path: Path) -> Any:
    """A YAML file's contents; a binary file, a YAML error or a duplicate key raise one-line ``CardError``."""
    data = path.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CardError(f"{path}: not a text file, so not a YAML run card") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None


def load_card(path: str | Path, overrides: list[str] | None = None) -> Card:
    """Read and validate a YAML run card. The default ``out`` is ``runs/out/<card stem>``."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"card file not found: {path}")
    raw = read_yaml(path)
    if isinstance(raw, dict) and "out" not in raw:
        raw = {**raw, "out": f"runs/out/{path.stem}"}
    return parse_card(raw, overrides)

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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from flows.model import FlowConfig
from flows.sun.config import SUNFlowConfig
from flows.train import TrainConfig
from flows.u1.config import U1FlowConfig


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


class _LatticeCard(_Section):
    """A theory on a periodic lattice ``shape``; each theory narrows ``name`` to its own literal (the
    discriminator), which keeps ``name`` and ``shape`` the first two keys."""

    name: str
    shape: tuple[int, ...]
    _shape = field_validator("shape")(classmethod(lambda cls, v: _check_shape(v)))


class Phi4Card(_LatticeCard):
    name: Literal["phi4"]
    m2: float
    lam: float = Field(ge=0)


class U1Card(_LatticeCard):
    name: Literal["u1"]
    beta: float


class SUNCard(_LatticeCard):
    name: Literal["sun"]
    beta: float
    N: int = Field(ge=2)


TheoryCard = Annotated[Phi4Card | U1Card | SUNCard, Field(discriminator="name")]


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
    "(flows.model.FlowConfig for φ⁴, flows.u1.flow.U1FlowConfig, flows.sun.flow.SUNFlowConfig).",
    FlowConfig, U1FlowConfig, SUNFlowConfig)
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
    theory: TheoryCard
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


def _describe(error: dict, model: type[BaseModel]) -> str:
    """One-line description of one pydantic error, naming the dotted key and what it accepts."""
    loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and p in ("phi4", "u1", "sun"))]
    key = ".".join(loc) or "card"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' (accepted here: {', '.join(_accepted_keys(model, loc[:-1], error))})"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    return f"'{key}': {error['msg']} (got {error.get('input')!r})"


def _accepted_keys(model: type[BaseModel], loc: list[str], error: dict) -> list[str]:
    """Field names of the section at ``loc``; for the theory section, those of the named theory."""
    section: Any = model
    for part in loc:
        field = section.model_fields.get(part) if hasattr(section, "model_fields") else None
        if field is None:
            return ["?"]
        section = field.annotation
        if part == "theory":
            name = (error.get("input_parent") or {}).get("name") if isinstance(error, dict) else None
            section = {"phi4": Phi4Card, "u1": U1Card, "sun": SUNCard}.get(name, Phi4Card)
    return list(section.model_fields)


def parse_card(raw: Any, overrides: list[str] | None = None) -> Card:
    """Validate a raw card (dict from YAML) with ``--set`` overrides into a frozen ``Card``."""
    if not isinstance(raw, dict):
        raise CardError("a run card must be a YAML mapping with at least a 'theory' section")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Card.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "extra_forbidden" and first["loc"][:1] == ("theory",):
            first = {**first, "input_parent": raw.get("theory")}
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise CardError(f"card: {_describe(first, Card)}{more}") from None


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

"""Run cards: YAML parsed once into frozen, validated pydantic models (DESIGN.md, "Run card"); the
section models are ``mcmc.card_sections``.

Every section except ``theory`` has defaults. An unknown key, a wrong type or a bad value raises
``CardError`` whose one-line message names the dotted key and what it accepts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator

from flows.train import TrainConfig
from mcmc.card_sections import (
    AccelCard,
    CardError,
    FlowCard,
    HMCCard,
    LocalCard,
    MeasureCard,
    SampleCard,
    SamplerCard,
    Section,
    TheoryCard,
    TrainCard,
    section_settings,
    theory_card,
)
from mcmc.yaml_values import load as load_yaml
from mcmc.yaml_values import parse_value

__all__ = ["Card", "CardError", "apply_overrides", "load_card", "parse_card", "read_yaml", "section_settings",
           "stage_cards"]


class Card(Section):
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

    def physics_hash(self, *, with_added_keys: bool = False) -> str:
        """Hash of what defines the Markov chain: theory, sampler, the settings section of that sampler
        (``hmc``, ``flow`` or ``local``), seed and dtype. A trained flow is checked by its own hash.
        The sampler's section enters without the keys added later at their old value (``Section.hashed``);
        ``with_added_keys`` gives the hash with them, which ensembles written while those keys were
        hashed carry (``legacy_hashes``)."""
        dump = self.model_dump(mode="json")
        values = {k: dump[k] for k in ("theory", "sampler", "seed", "dtype")}
        kind = self.sampler.kind
        values[kind] = dump[kind] if with_added_keys else getattr(self, kind).hashed()
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def legacy_hashes(self) -> tuple[str, ...]:
        """Earlier physics hashes of this same chain that a stored checkpoint may carry: the one with the
        sampler section's added keys at their old values (hashed so between their addition and
        ``Section.ADDED_KEYS``), when it differs from ``physics_hash``."""
        full = self.physics_hash(with_added_keys=True)
        return () if full == self.physics_hash() else (full,)


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
        node[parts[-1]] = parse_value(value)
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
        return load_yaml(text)
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

"""``from_mapping`` and ``to_dict`` for the frozen configuration dataclasses (flow architectures, training).

A run card's section arrives as a plain mapping; ``from_mapping`` turns it into the dataclass and refuses
an unknown key with a ``ValueError`` that names it and the accepted ones. ``to_dict`` is the inverse, in
plain containers (tuples become lists), as stored in checkpoints. ``check_conditioner`` and
``check_choice`` are the validations that the flow families' configs share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from flows.nets import ACTIVATIONS

C = TypeVar("C", bound="MappingConfig")


class MappingConfig:
    """Mixin for a frozen dataclass. A subclass may set, as plain class attributes:

    ``_section``: the card section named in the error ("flow", "train"); ``_accepts``: the words before
    the list of accepted keys; ``_ignored``: keys accepted and dropped (settings of another flow family
    that a card may carry); ``_added``: keys added after checkpoints were written without them, with the
    value that those checkpoints' flows have, left out of ``to_dict`` at that value so that the old
    checkpoints still match.
    """

    _section: ClassVar[str] = "flow"
    _accepts: ClassVar[str] = "accepted keys are"
    _ignored: ClassVar[tuple[str, ...]] = ()
    _added: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form (lists, numbers, strings), as stored in checkpoints; an ``_added`` key at
        its old value is left out."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k not in self._added or v != self._added[k]}

    @classmethod
    def from_mapping(cls: type[C], config: Mapping[str, Any] | None) -> C:
        """Build from a dict (e.g. a card section); an unknown key raises ``ValueError`` naming it and the
        accepted keys, a key in ``_ignored`` is dropped."""
        config = {k: v for k, v in dict(config or {}).items() if k not in cls._ignored}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown {cls._section} key(s) {unknown}; {cls._accepts} {sorted(known)}")
        return cls(**config)

    @classmethod
    def of(cls: type[C], config: C | Mapping[str, Any] | None) -> C:
        """``config`` itself when it already is a ``cls``, else ``from_mapping(config)``: what a builder
        accepts as its config (an instance, a plain dict of its keys, or None for the defaults)."""
        return config if isinstance(config, cls) else cls.from_mapping(config)


def check_choice(key: str, value: Any, accepted: Iterable[Any], section: str = "flow") -> None:
    """Raise ``ValueError`` naming ``<section>.<key>`` unless ``value`` is one of ``accepted``."""
    accepted = sorted(accepted)
    if value not in accepted:
        raise ValueError(f"{section}.{key} = {value!r}: expected one of {accepted}")


def check_conditioner(config: Any) -> None:
    """The checks shared by every flow config with CNN-conditioned couplings (frozen dataclasses with
    ``n_layers``, ``hidden``, ``kernel_size`` and ``activation``): ``hidden`` becomes a tuple of ints,
    ``n_layers`` >= 0, ``kernel_size`` odd and positive, ``activation`` one of ``flows.nets.ACTIVATIONS``."""
    object.__setattr__(config, "hidden", tuple(int(h) for h in config.hidden))
    if config.n_layers < 0:
        raise ValueError(f"flow.n_layers = {config.n_layers}: expected a non-negative integer")
    if config.kernel_size < 1 or config.kernel_size % 2 == 0:
        raise ValueError(f"flow.kernel_size = {config.kernel_size}: expected an odd positive integer")
    check_choice("activation", config.activation, ACTIVATIONS)

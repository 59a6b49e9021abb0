"""The YAML dialect of run cards and ``--set`` values.

PyYAML implements YAML 1.1, whose float pattern needs a dot: ``1e-3`` and ``5E+2`` load as *strings*, so a
card's ``tol: 1e-3`` or ``--set gradient_flow.tol=1e-3`` would reach the code as text (and a stored
parameter set would differ from the same one written ``0.001``). :class:`StrictLoader` resolves floats as
YAML 1.2 does (``[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?``, plus ``.inf``/``.nan``) and
refuses a key given twice in one mapping (YAML 1.1 keeps the last one silently).
"""

from __future__ import annotations

import re
import typing
from typing import Any

import yaml

_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+|\.[0-9]+[eE][-+]?[0-9]+)
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats that refuses a key given twice in one mapping."""

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


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def load(text: str | bytes) -> Any:
    """YAML text → Python objects with :class:`StrictLoader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_value(text: str) -> Any:
    """A ``--set`` value: parsed as YAML, so ``8``, ``-4.0``, ``1e-3``, ``[8, 8]`` and ``true`` keep their
    types; text that is not valid YAML stays text."""
    try:
        return load(text)
    except yaml.YAMLError:
        return text

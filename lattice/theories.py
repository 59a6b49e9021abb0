"""Build a theory object from its JSON description (``theory.params()``), as stored in HDF5 files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lattice.scalar import Phi4


def theory_from_params(params: Mapping[str, Any]) -> Any:
    """Inverse of ``theory.params()``: ``{"name": "phi4", "shape": [8, 8], "m2": .., "lam": ..}`` → Phi4."""
    values = dict(params)
    name = values.pop("name", None)
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown theory name {name!r}; accepted: {', '.join(sorted(builders))}")
    if "shape" in values:
        values["shape"] = tuple(values["shape"])
    return builders[name](**values)


def _builders() -> dict[str, Any]:
    """Theory constructors by card name; gauge theories register here as they are added."""
    builders: dict[str, Any] = {"phi4": Phi4}
    try:
        from lattice.u1 import U1

        builders["u1"] = U1
    except ImportError:
        pass
    try:
        from lattice.wilson import SUN

        builders["sun"] = SUN
    except ImportError:
        pass
    return builders

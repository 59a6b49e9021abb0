"""What a theory is to the rest of latflow (the ``Theory`` protocol), and the registry of theories by
name, through which cards, HDF5 files and summaries name them.

A theory is a frozen dataclass whose fields are its parameters (``shape`` first) plus a ``name`` field
defaulting to its registered name. Adding one is a ``lattice/`` module and one ``register_theory`` call;
samplers and flow families are found for it in their own registries (``mcmc.kernels.local.registry``,
``flows.registry``), and HMC needs nothing more than ``grad_action``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from lattice.scalar import Phi4
from lattice.u1 import U1
from lattice.wilson import SUN


@runtime_checkable
class Theory(Protocol):
    """A lattice theory, as the samplers, the flows and the measurements use it.

    Fields carry a leading batch axis B: ``x`` has shape ``(B, *field_shape)``.

    * ``action(x) -> (B,)``: the Euclidean action S; the chains sample e^{−S};
    * ``observables(x) -> {name: (B,)}``: the in-stream measurements (written to ``obs/<name>``);
    * ``random_field(n, generator, dtype, device) -> (n, *field_shape)``: a start for n chains;
    * ``params() -> dict``: the JSON description (``name``, ``shape`` and the parameters), the inverse of
      ``theory_from_params``.

    Optional, by sampler: HMC on real fields or angles needs ``grad_action(x)`` (∂S/∂x, shape of x); a
    theory on a matrix group declares ``manifold = "sun"`` and gives ``force(U)`` instead (see
    ``mcmc.kernels.hmc``). Gauge theories give ``plaquettes(x)``. A theory whose ``Q`` observable has an
    exact distribution gives ``exact_charge_distribution() -> {Q: P(Q)} | None`` (the report draws it).
    """

    name: str
    shape: tuple[int, ...]

    @property
    def field_shape(self) -> tuple[int, ...]: ...

    def action(self, x: torch.Tensor) -> torch.Tensor: ...

    def observables(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def random_field(self, n: int, generator: torch.Generator, dtype: torch.dtype = ...,
                     device: torch.device | str | None = ...) -> torch.Tensor: ...

    def params(self) -> dict: ...


_THEORIES: dict[str, type] = {}


def register_theory(cls: type) -> type:
    """Register the theory dataclass ``cls`` under the default of its ``name`` field; returns ``cls``
    (usable as a class decorator). A later registration of the same name replaces the earlier one."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    name = defaults.get("name", dataclasses.MISSING)
    if not isinstance(name, str):
        raise TypeError(f"{cls.__name__} needs a field 'name: str' whose default is its registered name")
    _THEORIES[name] = cls
    return cls


def theory_names() -> list[str]:
    """The registered theory names, sorted."""
    return sorted(_THEORIES)


def theory_class(name: str) -> type:
    """The theory dataclass registered as ``name``; ``ValueError`` naming the accepted ones if none."""
    if name not in _THEORIES:
        raise ValueError(f"unknown theory name {name!r}; accepted: {', '.join(theory_names())}")
    return _THEORIES[name]


def theory_from_params(params: Mapping[str, Any]) -> Any:
    """Inverse of ``theory.params()``: ``{"name": "phi4", "shape": [8, 8], "m2": .., "lam": ..}`` → Phi4."""
    values = dict(params)
    cls = theory_class(values.pop("name", None))
    if "shape" in values:
        values["shape"] = tuple(values["shape"])
    return cls(**values)


register_theory(Phi4)
register_theory(U1)
register_theory(SUN)

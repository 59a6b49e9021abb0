"""Measurement groups: what ``latflow measure --obs NAME`` computes per configuration and reports.

A group turns a batch of configurations ``(B, *field_shape)`` into per-configuration *primaries*, each
``(B,)`` (``primaries``), and turns the stored primary series into what is reported (``plan``): series
reported as they are (``direct``) and derived quantities ``(name, inputs, f)`` of their means, whose
errors come from linear propagation (``observables.derived``).

Built-in groups (names in DESIGN.md, "Conventions"):

=================  ===========  ===========================================================================
``correlators``    φ⁴           G_<t>, meff_<t>, chi2, xi2, U4 (``observables.correlators``)
``wilson_loops``   U(1), SU(N)  W_<R>x<T>, creutz_<R>x<T>, V_<R> (``observables.loops``); params r_max,
                                t_max (default: half the smallest extent), t_v (the T of V_R, default
                                t_max − 1)
``polyakov_corr``  U(1), SU(N)  polyakov_corr_<r>, r = 0..r_max (default half the smallest spatial extent)
``gradient_flow``  SU(N)        t0, w0, t2E_<t>, t2E_plaq_<t>, and in 4D Q_t0, chi_t
                                (``observables.flow_scales``); params t_max, dt, q_every, report_every, tol
=================  ===========  ===========================================================================

A user observable ``module:function`` is a callable ``f(x, theory)`` taking ``x (B, *field_shape)`` and
returning ``(B,)`` (reported as ``function``) or ``(B, k)`` (reported as ``function_0`` … ``function_<k−1>``).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from observables.correlators import phi4_derived, phi4_primaries
from observables.flow_scales import FlowGrid, charge_at, flow_derived, flow_primaries, scales_from_means
from observables.loops import default_extent, loop_derived, polyakov_correlator, wilson_loops

Derived = tuple[str, tuple[str, ...], Callable[[np.ndarray], float]]
Series = Mapping[str, list[np.ndarray]]  # name -> replicas (N_r,)


class GroupError(ValueError):
    """An unknown group, parameter or user observable; one-line message."""


@dataclass(frozen=True)
class Plan:
    """What a group reports: ``direct`` series (name -> replicas) and ``derived`` quantities."""

    direct: dict[str, list[np.ndarray]]
    derived: list[Derived] = field(default_factory=list)


@dataclass(frozen=True)
class Group:
    """A measurement group: ``theories`` it applies to, ``defaults`` of its parameters, and the two maps."""

    name: str
    theories: tuple[str, ...]
    defaults: Mapping[str, Any]
    primaries: Callable[[torch.Tensor, Any, Mapping[str, Any]], dict[str, torch.Tensor]]
    plan: Callable[[Series, Any, Mapping[str, Any]], Plan]

    def params(self, theory: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved parameters: defaults (some depend on the lattice) updated by ``overrides``."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            accepted = sorted(self.defaults)
            raise GroupError(f"{self.name}: unknown parameter {unknown[0]!r}; accepted: {accepted}")
        out = {k: (v(theory) if callable(v) else v) for k, v in self.defaults.items()}
        out.update(overrides)
        return out


def _mean(replicas: list[np.ndarray]) -> float:
    return float(np.concatenate(replicas).mean())


# ---- φ⁴ correlators -------------------------------------------------------------------------------
def _corr_plan(series: Series, theory: Any, params: Mapping[str, Any]) -> Plan:
    return Plan({}, phi4_derived(theory.shape))


# ---- Wilson loops and the Polyakov correlator ---------------------------------------------------------
def _loops_primaries(x: torch.Tensor, theory: Any, p: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return wilson_loops(x, int(p["r_max"]), int(p["t_max"]))


def _loops_plan(series: Series, theory: Any, p: Mapping[str, Any]) -> Plan:
    r_max, t_max = int(p["r_max"]), int(p["t_max"])
    direct = {k: v for k, v in series.items() if k.startswith("W_")}
    t_v = None if p.get("t_v") is None else int(p["t_v"])
    return Plan(direct, loop_derived(r_max, t_max, t_v))


def _poly_primaries(x: torch.Tensor, theory: Any, p: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return polyakov_correlator(x, None if p["r_max"] is None else int(p["r_max"]))


def _direct_plan(series: Series, theory: Any, p: Mapping[str, Any]) -> Plan:
    return Plan(dict(series))


# ---- gradient flow ----------------------------------------------------------------------------------
def _grid(p: Mapping[str, Any]) -> FlowGrid:
    return FlowGrid(
        float(p["t_max"]), float(p["dt"]), int(p["q_every"]), int(p["report_every"]), float(p["tol"])
    )


def _flow_primaries(x: torch.Tensor, theory: Any, p: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return flow_primaries(x, _grid(p))


def _flow_plan(series: Series, theory: Any, p: Mapping[str, Any]) -> Plan:
    grid = _grid(p)
    derived = flow_derived(grid)
    means = [_mean(series[f"E_{k}"]) for k in range(len(grid.times))]
    t0, _ = scales_from_means(grid, means)
    direct: dict[str, list[np.ndarray]] = {}
    q = charge_at(grid, {k: np.concatenate(v) for k, v in series.items() if k.startswith("Q_")}, t0)
    if q is not None:
        lengths = np.cumsum([len(r) for r in series["E_0"]])[:-1]
        q_reps = np.split(q, lengths)
        direct["Q_t0"] = q_reps
        direct["chi_t"] = [r**2 / math.prod(theory.shape) for r in q_reps]
    return Plan(direct, derived)


def _half(theory: Any) -> int:
    return default_extent(tuple(theory.shape))


BUILTIN: dict[str, Group] = {
    "correlators": Group("correlators", ("phi4",), {}, lambda x, th, p: phi4_primaries(x), _corr_plan),
    "wilson_loops": Group(
        "wilson_loops", ("u1", "sun"), {"r_max": _half, "t_max": _half, "t_v": None},
        _loops_primaries, _loops_plan,
    ),
    "polyakov_corr": Group("polyakov_corr", ("u1", "sun"), {"r_max": None}, _poly_primaries, _direct_plan),
    "gradient_flow": Group(
        "gradient_flow", ("sun",),
        {"t_max": 4.0, "dt": 0.1, "q_every": 2, "report_every": 5, "tol": 1e-5},
        _flow_primaries, _flow_plan,
    ),
}


def user_group(spec: str) -> Group:
    """The group of a user observable ``module:function`` (module importable from sys.path)."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise GroupError(f"user observable {spec!r}: expected module:function")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise GroupError(f"user observable {spec!r} cannot be imported: {exc}") from None
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = spec
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]

    def primaries(x: torch.Tensor, theory: Any, p: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = torch.as_tensor(func(x, theory))
        if out.dim() == 1 and out.shape[0] == x.shape[0]:
            return {func_name: out.real.to(torch.float64)}
        if out.dim() == 2 and out.shape[0] == x.shape[0]:
            return {f"{func_name}_{j}": out[:, j].real.to(torch.float64) for j in range(out.shape[1])}
        shape = tuple(out.shape)
        raise GroupError(f"user observable {spec!r} returned shape {shape}; expected (B,) or (B, k)")

    return Group(f"user:{spec}", ("phi4", "u1", "sun"), {"source_sha256": digest}, primaries, _direct_plan)


def resolve(names: list[str], theory_name: str) -> list[Group]:
    """Groups for ``--obs`` names (built-in names or ``module:function``), checked against the theory."""
    groups = []
    for name in names:
        group = user_group(name.removeprefix("user:")) if ":" in name else BUILTIN.get(name)
        if group is None:
            accepted = sorted(BUILTIN)
            raise GroupError(f"unknown observable group {name!r}; accepted: {accepted} or module:function")
        if theory_name not in group.theories:
            raise GroupError(f"{name} is for {'/'.join(group.theories)} ensembles, not {theory_name}")
        groups.append(group)
    return groups

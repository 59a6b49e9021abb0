"""Post-hoc measurement of stored ensembles (``latflow measure FILES --obs NAME[,NAME] --set g.key=v``).

For every requested group (``observables.groups``) and replica file, the stored configurations not yet
measured with the same parameters are read in blocks of ``block`` rows (each row holds the B chains),
measured, and appended to the replica's sidecar file (``mcmc.io.measurements``), so that a killed
measurement resumes and a repeated one reuses what is there. Under MPI the blocks of each file are dealt
round-robin to the ranks; rank 0 gathers and writes them in order. ``analyze`` then turns the stored
primaries of every replica and chain into Gamma-method results (each chain of each replica file is one
replica of the Gamma method).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lattice.theories import theory_from_params
from mcmc.io import measurements as side
from mcmc.io.ensemble import open_for_reading
from mcmc.io.store import StoreError
from mcmc.runtime import World
from mcmc.yaml_values import parse_value
from observables.derived import analyze as analyze_derived
from observables.gamma import GammaResult
from observables.groups import Group, GroupError, Plan, resolve
from observables.measure import summarize


@dataclass(frozen=True)
class Measured:
    """Stored primaries of every group: ``series[group][name]`` = replicas ``(N,)`` (file-major, then
    chain), with ``replica_names`` ``<ensemble>|r<rank>c<chain>`` in the same order."""

    theory: Any
    groups: tuple[Group, ...]
    params: Mapping[str, Mapping[str, Any]]
    series: Mapping[str, Mapping[str, list[np.ndarray]]]
    replica_names: tuple[str, ...]


def parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["wilson_loops.r_max=3", ...]`` → ``{"wilson_loops": {"r_max": 3}}`` (values parsed as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        group, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise GroupError(f"--set {item!r}: expected GROUP.KEY=VALUE, e.g. gradient_flow.t_max=3.5")
        out.setdefault(group, {})[name] = parse_value(value)
    return out


def _file_info(path: Path) -> tuple[dict, np.ndarray, str]:
    with open_for_reading(path) as f:
        n = len(f["traj"])
        return json.loads(f.attrs["theory"]), f["crc32"][:n], str(f.attrs.get("ensemble_id", path.stem))


def _measure_block(path: Path, rows: tuple[int, int], group: Group, theory: Any,
                   params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    with open_for_reading(path) as f:
        configs = f["configs"][rows[0] : rows[1]]
    n, b = configs.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(configs)).reshape(n * b, *configs.shape[2:])
    with torch.no_grad():
        values = group.primaries(x, theory, params)
    return {k: v.detach().cpu().numpy().astype(np.float64).reshape(n, b) for k, v in values.items()}


def _measure_file(path: Path, group: Group, theory: Any, params: Mapping[str, Any], world: World,
                  block: int, bar: tqdm | None) -> None:
    from mcmc.parallel import allgather, bcast

    _, crc, ensemble_id = _file_info(path)
    sidecar = side.sidecar_path(path)
    n_keep = 0
    if world.rank == 0:
        n_keep = side.stored_rows(sidecar, group.name, params, crc)
        side.start_group(sidecar, group.name, params, n_keep,
                         {"ensemble": path.name, "ensemble_id": ensemble_id, "n_chains": int(crc.shape[1])})
    n_keep = bcast(world, n_keep)
    starts = list(range(n_keep, len(crc), block))
    if bar is not None:
        bar.update(n_keep)
    for first in range(0, len(starts), world.size):
        mine = first + world.rank
        rows = (starts[mine], min(starts[mine] + block, len(crc))) if mine < len(starts) else None
        result = _measure_block(path, rows, group, theory, params) if rows else None
        gathered = allgather(world, (rows, result))
        if world.rank == 0:
            for got_rows, values in gathered:
                if got_rows is not None:
                    side.append_rows(sidecar, group.name, values, crc[got_rows[0] : got_rows[1]])
                    if bar is not None:
                        bar.update(got_rows[1] - got_rows[0])


def measure_files(paths: Sequence[str | Path], names: Sequence[str], sets: Mapping[str, Mapping[str, Any]],
                  world: World | None = None, block: int = 4, progress: bool = False) -> Measured:
    """Measure the groups ``names`` on the replica files ``paths`` (resuming and reusing stored rows)
    and return every group's stored series. ``sets``: parameter overrides per group name."""
    world = world or World()
    paths = [Path(p) for p in paths]
    infos = [_file_info(p) for p in paths]
    if any(info[0] != infos[0][0] for info in infos):
        raise StoreError("the files hold different theories; not replicas of one ensemble")
    theory = theory_from_params(infos[0][0])
    groups = resolve(list(names), theory.name)
    unknown = sorted(set(sets) - {g.name for g in groups})
    if unknown:
        raise GroupError(f"--set for {unknown[0]!r}, which is not measured (--obs)")
    params = {g.name: g.params(theory, sets.get(g.name, {})) for g in groups}
    total = sum(len(info[1]) for info in infos)
    for g in groups:
        bar = tqdm(total=total, desc=g.name, disable=not progress or world.rank != 0, dynamic_ncols=True)
        for path in paths:
            _measure_file(path, g, theory, params[g.name], world, block, bar)
        bar.close()
    return load_measured(paths, groups, params, theory) if world.rank == 0 else Measured(
        theory, tuple(groups), params, {}, ())


def load_measured(paths: Sequence[Path], groups: Sequence[Group], params: Mapping[str, Mapping[str, Any]],
                  theory: Any) -> Measured:
    """Read the stored primaries of ``groups`` from the sidecars of ``paths``."""
    series: dict[str, dict[str, list[np.ndarray]]] = {g.name: {} for g in groups}
    names: list[str] = []
    for path in paths:
        _, crc, ensemble_id = _file_info(path)
        ensemble, _, rank = ensemble_id.rpartition("|")
        names += [f"{ensemble or ensemble_id}|{rank or 'r0'}c{b}" for b in range(crc.shape[1])]
        for g in groups:
            for name, values in side.read_group(side.sidecar_path(path), g.name).items():
                series[g.name].setdefault(name, []).extend(values[:, b] for b in range(values.shape[1]))
    return Measured(theory, tuple(groups), params, series, tuple(names))


SEP = ":"  # in-stream primaries are stored as obs/<group>:<primary>


def stream_measure(theory: Any, names: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> Any:
    """The in-stream measurement of a card: ``theory.observables(x)`` plus every primary of the groups
    ``names`` as ``<group>:<primary>``, each ``(B,)``. Raises ``GroupError`` for a bad group or parameter."""
    if not names:
        return theory.observables
    groups = resolve(list(names), theory.name)
    unknown = sorted(set(params) - {g.name for g in groups})
    if unknown:
        raise GroupError(f"card: measure.params.{unknown[0]} is not a measured group (measure.obs)")
    resolved = {g.name: g.params(theory, params.get(g.name, {})) for g in groups}

    def measure(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(theory.observables(x))
        with torch.no_grad():
            for g in groups:
                values = g.primaries(x, theory, resolved[g.name])
                out.update({f"{g.name}{SEP}{k}": v for k, v in values.items()})
        return out

    return measure


def stream_results(series: Mapping[str, list[np.ndarray]], theory_params: Mapping[str, Any], card_yaml: str,
                   S: float = 1.5) -> tuple[dict[str, list[np.ndarray]], dict[str, GammaResult]]:
    """Split in-stream series into the theory's own and the ``measure:`` groups' primaries, and report the
    groups like ``measure --obs``: returns (series without group primaries + direct series, results of the
    groups' reported quantities)."""
    import yaml

    own = {k: v for k, v in series.items() if SEP not in k}
    grouped: dict[str, dict[str, list[np.ndarray]]] = {}
    for key, value in series.items():
        if SEP in key:
            group, _, name = key.rpartition(SEP)
            grouped.setdefault(group, {})[name] = value
    if not grouped:
        return own, {}
    card = yaml.safe_load(card_yaml or "{}") or {}
    overrides = (card.get("measure") or {}).get("params") or {}
    theory = theory_from_params(theory_params)
    groups = resolve(list(grouped), theory.name)
    params = {g.name: g.params(theory, overrides.get(g.name, {})) for g in groups}
    measured = Measured(theory, tuple(groups), params, grouped, ())
    results, direct = analyze(measured, S=S)
    return {**own, **direct}, results


def plans(measured: Measured) -> dict[str, Plan]:
    """What each group reports, from its stored series (a group with nothing stored reports nothing)."""
    return {g.name: g.plan(measured.series[g.name], measured.theory, measured.params[g.name])
            for g in measured.groups if measured.series.get(g.name)}


def analyze(measured: Measured, S: float = 1.5) -> tuple[dict[str, GammaResult], dict[str, list[np.ndarray]]]:
    """Gamma-method results of every reported quantity, and the series of the directly reported ones."""
    results: dict[str, GammaResult] = {}
    direct: dict[str, list[np.ndarray]] = {}
    for name, plan in plans(measured).items():
        results.update(summarize(plan.direct, S=S))
        direct.update(plan.direct)
        pool = {**measured.series[name], **plan.direct}
        results.update(analyze_derived(pool, plan.derived, S=S))
    return results, direct

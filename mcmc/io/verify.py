"""``latflow verify``: integrity checks of replica files (checksums, continuity, provenance, format).

Each problem is reported as one line; a file is sound when none is found. The checks: the file
opens and is whole (not truncated), its ``format_version`` is supported, every dataset has one row
per stored configuration, the CRC-32 of every configuration matches (a mismatch names the index and
chain), the update indices ``traj`` start at ``n_therm + every`` and advance by ``every`` with no gap
and no duplicate, the CRC-32 of every row of every other dataset (``obs/*``, ``logp``, ``logq``,
``accepted``, ``traj``, ``dH``, ``proposal_logw``, ``accept_prob``, ``crc32``) matches its ``row_crc32``
(a mismatch names the dataset and the row), the ``card`` and ``theory`` attributes match their
``provenance_sha256``, the provenance attributes agree with the card stored in the file (compared
NaN-safe), and the run finished (``status`` complete, with the card's ``n_configs`` configurations).
Files written before ``row_crc32`` existed have only their configurations checksummed; ``unchecked``
says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from mcmc.io.ensemble import open_for_reading
from mcmc.io.store import (
    CHAIN_DATASETS,
    ROW_CRC,
    StoreError,
    config_crc32,
    provenance_sha256,
    rows_crc32,
)

REQUIRED_ATTRS = (
    "format_version",
    "code_version",
    "created",
    "card",
    "theory",
    "seed",
    "spawn_key",
    "replica",
    "n_replicas",
    "ensemble_id",
)


def _check_crc(f: h5py.File, chunk: int = 256) -> list[str]:
    """Recompute the CRC-32 of every configuration; name each stored index (and chain) that differs."""
    problems = []
    configs, crc = f["configs"], f["crc32"]
    n = min(configs.shape[0], crc.shape[0])
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        bad = np.argwhere(config_crc32(configs[start:stop]) != crc[start:stop])
        problems += [
            f"configuration {start + i} (chain {b}): crc32 mismatch, data altered after writing"
            for i, b in bad
        ]
    return problems


def _check_rows(f: h5py.File, n: int, chunk: int = 4096) -> list[str]:
    """Recompute each row's CRC-32 of every dataset ``row_crc32`` covers; name the dataset and the rows."""
    if ROW_CRC not in f:
        return []
    names = json.loads(f[ROW_CRC].attrs.get("columns", "[]"))
    missing = [name for name in names if name not in f]
    problems = [f"dataset {name} is missing (row_crc32 covers it)" for name in missing]
    for k, name in enumerate(names):
        if name in missing:
            continue
        bad: list[int] = []
        rows = min(n, f[name].shape[0])  # a short dataset is reported by the row-count check
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            stored = f[ROW_CRC][start:stop, k]
            bad += [start + int(i) for i in np.flatnonzero(rows_crc32(f[name][start:stop]) != stored)]
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            problems.append(f"dataset {name}: row(s) {shown} differ from their checksums (altered later)")
    return problems


def _check_sealed(f: h5py.File) -> list[str]:
    """The ``card`` and ``theory`` attributes against their ``provenance_sha256``."""
    sealed = f.attrs.get("provenance_sha256")
    if sealed is None or "card" not in f.attrs or "theory" not in f.attrs:
        return []
    if provenance_sha256(str(f.attrs["card"]), str(f.attrs["theory"])) != str(sealed):
        return ["card or theory attribute altered after writing (provenance_sha256 mismatch)"]
    return []


def unchecked(path: str | Path) -> list[str]:
    """What ``verify_file`` cannot check in this file (one line each); empty for current files."""
    try:
        f = open_for_reading(path)
    except StoreError:
        return []
    with f:
        notes = []
        if ROW_CRC not in f:
            notes.append("no row_crc32 (an older latflow wrote it): only the configurations are checksummed")
        if "provenance_sha256" not in f.attrs:
            notes.append("no provenance_sha256 (written by an older latflow): card edits cannot be detected")
    return notes


def _same_json(a: Any, b: Any) -> bool:
    """Equality of JSON-like values in which NaN equals NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _check_traj(traj: np.ndarray, first: int | None = None, stride: int | None = None) -> list[str]:
    """The update indices must start at ``first`` and increase by ``stride`` (when known; else by
    their median step), with no gap and no duplicate."""
    problems = []
    if first is not None and len(traj) and int(traj[0]) != first:
        problems.append(f"configuration 0: traj is {traj[0]}, the card's n_therm + every gives {first}")
    if len(traj) < 2:
        return problems
    steps = np.diff(traj)
    stride = int(np.median(steps)) if stride is None else stride
    return problems + [
        f"configuration {i + 1}: traj jumps {traj[i]} -> {traj[i + 1]} (stride {stride}); "
        f"{'duplicate' if steps[i] <= 0 else 'gap'}"
        for i in np.flatnonzero(steps != stride)
    ]


def _card(f: h5py.File) -> dict[str, Any]:
    card = yaml.safe_load(f.attrs["card"])
    return card if isinstance(card, dict) else {}


def _check_provenance(f: h5py.File) -> list[str]:
    problems = [f"missing attribute {a}" for a in REQUIRED_ATTRS if a not in f.attrs]
    if problems:
        return problems
    card, theory = _card(f), json.loads(f.attrs["theory"])
    replica = int(f.attrs["replica"])
    if not _same_json(card.get("theory"), theory):
        problems.append(f"theory attribute {theory} disagrees with the card's {card.get('theory')}")
    if card.get("seed") != int(f.attrs["seed"]):
        problems.append(f"seed attribute {f.attrs['seed']} disagrees with the card's {card.get('seed')}")
    if json.loads(f.attrs["spawn_key"]) != [replica]:
        problems.append(f"spawn_key {f.attrs['spawn_key']} is not that of replica {replica}")
    if not 0 <= replica < int(f.attrs["n_replicas"]):
        problems.append(f"replica {replica} is outside 0..n_replicas-1 = {int(f.attrs['n_replicas']) - 1}")
    ensemble = card.get("name") or Path(str(card.get("out", ""))).name
    if str(f.attrs["ensemble_id"]) != f"{ensemble}|r{replica}":
        problems.append(f"ensemble_id {f.attrs['ensemble_id']!r} is not the card's {ensemble}|r{replica}")
    sampler = (card.get("sampler") or {}).get("kind")
    if "sampler" in f.attrs and sampler is not None and f.attrs["sampler"] != sampler:
        problems.append(f"sampler attribute {f.attrs['sampler']!r} disagrees with the card's {sampler!r}")
    return problems


def _check_complete(f: h5py.File, n: int) -> list[str]:
    if f.attrs.get("status") != "complete":
        return [f"status is {f.attrs.get('status')!r}: the run did not finish (resume it)"]
    want = (_card(f).get("sample") or {}).get("n_configs")
    if want is not None and n != int(want):
        return [f"holds {n} configurations, the card asks for {want}"]
    return []


def _sample_settings(f: h5py.File) -> tuple[int | None, int | None]:
    """(first stored update, stride) from the card in the file, when it says."""
    if "card" not in f.attrs:
        return None, None
    sample = _card(f).get("sample") or {}
    every = int(sample.get("every", 1))
    return int(sample.get("n_therm", 0)) + every, every


def verify_file(path: str | Path) -> list[str]:
    """Every problem found in one replica file, each a one-line message; empty when the file is sound."""
    try:
        f = open_for_reading(path)
    except StoreError as exc:
        return [str(exc)]
    with f:
        names = ("configs", "traj", "crc32", *CHAIN_DATASETS)
        missing = [n for n in names if n not in f]
        if missing:
            return [f"missing dataset(s): {', '.join(missing)}"]
        n = f["traj"].shape[0]
        problems = [
            f"dataset {d} has {f[d].shape[0]} rows, traj has {n}"
            for d in (*names, *(f"{g}/{k}" for g in ("obs", "proposal_obs") for k in f.get(g, {})),
                      *((ROW_CRC,) if ROW_CRC in f else ()))
            if f[d].shape[0] != n
        ]
        problems += _check_sealed(f)
        problems += _check_provenance(f)
        problems += _check_complete(f, n)
        problems += _check_traj(f["traj"][()], *_sample_settings(f))
        problems += _check_crc(f)
        problems += _check_rows(f, min(n, f[ROW_CRC].shape[0]) if ROW_CRC in f else 0)
    return problems

"""``latflow verify``: integrity checks of replica files (checksums, continuity, provenance, format)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import yaml

from mcmc.store import CHAIN_DATASETS, StoreError, config_crc32, open_for_reading

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
    for start in range(0, configs.shape[0], chunk):
        stop = min(start + chunk, configs.shape[0])
        bad = np.argwhere(config_crc32(configs[start:stop]) != crc[start:stop])
        problems += [
            f"configuration {start + i} (chain {b}): crc32 mismatch, data altered after writing"
            for i, b in bad
        ]
    return problems


def _check_traj(traj: np.ndarray) -> list[str]:
    """The update indices must increase by a constant stride, with no gap and no duplicate."""
    if len(traj) < 2:
        return []
    steps = np.diff(traj)
    stride = int(np.median(steps))
    return [
        f"configuration {i + 1}: traj jumps {traj[i]} -> {traj[i + 1]} (stride {stride}); "
        f"{'duplicate' if steps[i] <= 0 else 'gap'}"
        for i in np.flatnonzero(steps != stride)
    ]


def _check_provenance(f: h5py.File) -> list[str]:
    problems = [f"missing attribute {a}" for a in REQUIRED_ATTRS if a not in f.attrs]
    if problems:
        return problems
    card = yaml.safe_load(f.attrs["card"])
    theory = json.loads(f.attrs["theory"])
    if card.get("theory") != theory:
        problems.append(f"theory attribute {theory} disagrees with the card's {card.get('theory')}")
    if card.get("seed") != int(f.attrs["seed"]):
        problems.append(f"seed attribute {f.attrs['seed']} disagrees with the card's {card.get('seed')}")
    if not str(f.attrs["ensemble_id"]).endswith(f"|r{int(f.attrs['replica'])}"):
        problems.append(f"ensemble_id {f.attrs['ensemble_id']!r} does not end in |r{f.attrs['replica']}")
    if f.attrs.get("status") != "complete":
        problems.append(f"status is {f.attrs.get('status')!r}: the run did not finish (resume it)")
    return problems


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
            for d in (*names, *(f"obs/{k}" for k in f.get("obs", {})))
            if f[d].shape[0] != n
        ]
        problems += _check_provenance(f)
        problems += _check_traj(f["traj"][()])
        problems += _check_crc(f)
    return problems

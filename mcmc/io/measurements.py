"""Sidecar files of post-hoc measurements: ``<ensemble>.r<rank>.meas.h5`` beside each replica file.

The ensemble file itself is never written by ``measure`` (its writer may hold it, and ``verify``
checksums it). A sidecar holds one HDF5 group per measurement group (``correlators``, ``wilson_loops``,
``user:module:function``, …) with

- attributes ``params`` (the resolved parameters, JSON), ``group``, ``code_version``, ``created``,
  ``updated``, ``ensemble`` (the replica file's name), ``ensemble_id`` and ``n_done``;
- datasets ``<primary>`` of shape ``(n_done, B)`` (stored configuration × chain), and ``crc32``
  ``(n_done, B)``, the ensemble's checksums of exactly the configurations measured (provenance: which
  configurations, and a guard against an ensemble that was replaced).

Blocks are appended in a short write session each, ``n_done`` last, so a measurement killed at any
point resumes from the last completed block. Stored rows are reused when the group's parameters and the
checksums agree; otherwise the group is measured again from the start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mcmc.io.store import StoreError, code_version


def sidecar_path(ensemble_path: str | Path) -> Path:
    """``x/<ensemble>.r<rank>.h5`` → ``x/<ensemble>.r<rank>.meas.h5``."""
    p = Path(ensemble_path)
    return p.with_name(p.name[: -len(".h5")] + ".meas.h5" if p.name.endswith(".h5") else p.name + ".meas.h5")


def _key(group: str) -> str:
    return group.replace("/", "|")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open the measurement file ({exc}); delete it to measure again"
                         ) from None


def stored_rows(path: Path, group: str, params: Mapping[str, Any], crc32: np.ndarray) -> int:
    """How many leading rows of ``group`` can be reused: 0 unless the parameters match and the stored
    checksums equal the ensemble's ``crc32 (N, B)`` over those rows."""
    if not path.is_file():
        return 0
    with _open(path, "r") as f:
        g = f.get(_key(group))
        if g is None or json.loads(g.attrs["params"]) != json.loads(json.dumps(dict(params))):
            return 0
        n = min(int(g.attrs.get("n_done", 0)), len(crc32))
        if n == 0 or not np.array_equal(g["crc32"][:n], crc32[:n]):
            return 0
        return n


def start_group(path: Path, group: str, params: Mapping[str, Any], n_keep: int,
                attrs: Mapping[str, Any]) -> None:
    """Prepare ``group`` for appending after row ``n_keep``: truncate its datasets, or (n_keep = 0)
    create it afresh with ``params`` and provenance ``attrs``."""
    with _open(path, "a") as f:
        key = _key(group)
        if n_keep == 0 and key in f:
            del f[key]
        g = f.require_group(key)
        if n_keep == 0:
            g.attrs.update(group=group, params=json.dumps(dict(params), sort_keys=True),
                           code_version=code_version(), created=_now(), n_done=0, **dict(attrs))
        for ds in g.values():
            ds.resize(n_keep, axis=0)
        g.attrs["n_done"] = n_keep


def append_rows(path: Path, group: str, values: Mapping[str, np.ndarray], crc32: np.ndarray) -> int:
    """Append a block of rows: ``values[name]`` and ``crc32``, each ``(n, B)``; returns the new ``n_done``."""
    with _open(path, "a") as f:
        g = f[_key(group)]
        n0 = int(g.attrs["n_done"])
        for name, arr in {**values, "crc32": crc32}.items():
            arr = np.asarray(arr)
            if name not in g:
                dtype = np.uint32 if name == "crc32" else np.float64
                g.create_dataset(name, shape=(n0, *arr.shape[1:]), maxshape=(None, *arr.shape[1:]),
                                 dtype=dtype, chunks=(max(1, min(256, len(arr))), *arr.shape[1:]))
            ds = g[name]
            ds.resize(n0 + len(arr), axis=0)
            ds[n0:] = arr
        f.flush()
        g.attrs["n_done"] = n0 + len(crc32)
        g.attrs["updated"] = _now()
        return n0 + len(crc32)


def read_group(path: Path, group: str) -> dict[str, np.ndarray]:
    """Every primary of ``group`` as ``(n_done, B)`` arrays (``crc32`` excluded)."""
    with _open(path, "r") as f:
        g = f[_key(group)]
        n = int(g.attrs["n_done"])
        return {name: g[name][:n] for name in g if name != "crc32"}

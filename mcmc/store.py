"""HDF5 ensembles (DESIGN.md, "HDF5 ensemble") and atomic chain checkpoints.

One file per replica, ``<out>/<ensemble>.r<rank>.h5``. With B chains per replica the per-configuration
datasets have shape ``(N, B, ...)``: axis 0 is the stored configuration, axis 1 the chain.

    configs (N, B, *field_shape)   traj (N,)          accepted, logp, logq, dH (N, B)
    crc32   (N, B) uint32          obs/<name> (N, B)  proposal_logw (N, B)

``logq`` is NaN for kernels without a proposal density (HMC, local) and ``dH`` NaN for those
without a Hamiltonian (flow, local). ``proposal_logw`` = log p̃ − log q of the proposal made at
that update (NaN without a proposal density); it gives the reweighting ESS.

All datasets are chunked, resizable along axis 0 and appended together. The root attribute
``status`` is "running" until the run finishes, then "complete", so an interrupted or failed
run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
CHAIN_DATASETS = ("accepted", "logp", "logq", "dH", "proposal_logw")


class StoreError(RuntimeError):
    """A problem with an ensemble file; the message is one line and names the file."""


def code_version() -> str:
    """The installed latflow version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latflow")
    except PackageNotFoundError:
        return "unknown"


def replica_path(out: str | Path, ensemble: str, rank: int) -> Path:
    """``<out>/<ensemble>.r<rank>.h5``."""
    return Path(out) / f"{ensemble}.r{rank}.h5"


def checkpoint_path(h5_path: str | Path) -> Path:
    """The chain checkpoint beside an ensemble file: ``<ensemble>.r<rank>.ckpt``."""
    return Path(h5_path).with_suffix(".ckpt")


def config_crc32(configs: np.ndarray) -> np.ndarray:
    """CRC-32 of each configuration's bytes (C order, stored dtype); ``(n, B, ...) -> (n, B)`` uint32."""
    n, b = configs.shape[:2]
    flat = np.ascontiguousarray(configs).reshape(n, b, -1)
    return np.array([[zlib.crc32(flat[i, j].tobytes()) for j in range(b)] for i in range(n)], dtype=np.uint32)


@dataclass(frozen=True)
class Block:
    """A block of n stored updates of B chains, as numpy arrays ready for writing."""

    configs: np.ndarray  # (n, B, *field_shape)
    traj: np.ndarray  # (n,)
    accepted: np.ndarray  # (n, B) bool
    logp: np.ndarray  # (n, B)
    logq: np.ndarray  # (n, B)
    dH: np.ndarray  # (n, B)
    proposal_logw: np.ndarray  # (n, B)
    obs: Mapping[str, np.ndarray]  # name -> (n, B)

    def __len__(self) -> int:
        return len(self.traj)


def _create(f: h5py.File, name: str, row_shape: tuple[int, ...], dtype: Any, rows_per_chunk: int) -> None:
    f.create_dataset(
        name,
        shape=(0, *row_shape),
        maxshape=(None, *row_shape),
        dtype=dtype,
        chunks=(max(1, rows_per_chunk), *row_shape),
    )


class EnsembleWriter:
    """Append-only writer of one replica file; every dataset grows together, one ``Block`` at a time."""

    def __init__(self, path: str | Path, f: h5py.File) -> None:
        self.path = Path(path)
        self._f = f

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        field_shape: tuple[int, ...],
        n_chains: int,
        field_dtype: Any,
        obs_names: list[str],
        attrs: Mapping[str, Any],
    ) -> EnsembleWriter:
        """Create a new file with empty datasets and provenance attributes; refuses to overwrite."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(path, "x")
        config_bytes = int(np.prod(field_shape)) * n_chains * np.dtype(field_dtype).itemsize
        rows = int(min(256, max(1, 2**20 // max(config_bytes, 1))))
        _create(f, "configs", (n_chains, *field_shape), field_dtype, rows)
        _create(f, "traj", (), np.int64, 1024)
        _create(f, "crc32", (n_chains,), np.uint32, 1024)
        _create(f, "accepted", (n_chains,), np.bool_, 1024)
        for name in ("logp", "logq", "dH", "proposal_logw"):
            _create(f, name, (n_chains,), np.float64, 1024)
        for name in obs_names:
            _create(f, f"obs/{name}", (n_chains,), np.float64, 1024)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["code_version"] = code_version()
        f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        f.attrs["status"] = "running"
        for key, value in attrs.items():
            f.attrs[key] = value
        f.flush()
        return cls(path, f)

    @classmethod
    def reopen(cls, path: str | Path, n_rows: int) -> EnsembleWriter:
        """Open an existing file for appending, truncated to its first ``n_rows`` rows (the checkpoint's)."""
        f = h5py.File(path, "r+")
        n_have = f["traj"].shape[0]
        if n_have < n_rows:
            f.close()
            raise StoreError(f"{path}: holds {n_have} configurations, fewer than the checkpoint's {n_rows}")
        for ds in _row_datasets(f):
            ds.resize(n_rows, axis=0)
        f.attrs["status"] = "running"
        f.flush()
        return cls(path, f)

    @property
    def n_rows(self) -> int:
        return int(self._f["traj"].shape[0])

    def append(self, block: Block) -> None:
        """Append one block to every dataset and flush it to disk."""
        n0, n = self.n_rows, len(block)
        if n == 0:
            return
        columns = {
            "configs": block.configs,
            "traj": block.traj,
            "crc32": config_crc32(block.configs),
            "accepted": block.accepted,
            "logp": block.logp,
            "logq": block.logq,
            "dH": block.dH,
            "proposal_logw": block.proposal_logw,
            **{f"obs/{k}": v for k, v in block.obs.items()},
        }
        for name, values in columns.items():
            ds = self._f[name]
            ds.resize(n0 + n, axis=0)
            ds[n0:] = values
        self._f.flush()

    def set_attrs(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            self._f.attrs[key] = value
        self._f.flush()

    def close(self, complete: bool = False) -> None:
        """Close the file; mark it ``status = complete`` only when ``complete`` is true."""
        if self._f.id.valid:
            if complete:
                self._f.attrs["status"] = "complete"
            self._f.close()


def _row_datasets(f: h5py.File) -> list[h5py.Dataset]:
    """Every dataset indexed by stored configuration (all of them, including ``obs/*``)."""
    found: list[h5py.Dataset] = []
    f.visititems(lambda _name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


@dataclass(frozen=True)
class Ensemble:
    """What ``measure`` needs from one replica file: provenance and the in-stream observables."""

    path: Path
    attrs: Mapping[str, Any]
    theory: Mapping[str, Any]
    traj: np.ndarray  # (N,)
    accepted: np.ndarray  # (N, B)
    logp: np.ndarray  # (N, B)
    logq: np.ndarray  # (N, B)
    proposal_logw: np.ndarray  # (N, B)
    obs: Mapping[str, np.ndarray]  # name -> (N, B)


def open_for_reading(path: str | Path) -> h5py.File:
    """Open an ensemble file read-only, turning every failure into a one-line ``StoreError``."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no such ensemble file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 file ({exc})") from None
    version = f.attrs.get("format_version")
    if version != FORMAT_VERSION:
        f.close()
        shown = "missing" if version is None else str(version)
        raise StoreError(f"{path}: format_version {shown} is not the supported {FORMAT_VERSION}")
    return f


def read_ensemble(path: str | Path) -> Ensemble:
    """Read the provenance and in-stream observables of one replica file (configs are not loaded)."""
    with open_for_reading(path) as f:
        try:
            obs = {name: f["obs"][name][()] for name in f.get("obs", {})}
            return Ensemble(
                path=Path(path),
                attrs=dict(f.attrs),
                theory=json.loads(f.attrs["theory"]),
                traj=f["traj"][()],
                accepted=f["accepted"][()],
                logp=f["logp"][()],
                logq=f["logq"][()],
                proposal_logw=f["proposal_logw"][()],
                obs=obs,
            )
        except (KeyError, ValueError) as exc:
            raise StoreError(f"{path}: not a latflow ensemble ({exc})") from None


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over ``path``."""
    import torch

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

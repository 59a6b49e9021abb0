"""HDF5 ensembles (DESIGN.md, "HDF5 ensemble"): their layout, the writer, and atomic chain checkpoints;
reading them back is ``mcmc.io.ensemble``.

One file per replica, ``<out>/<ensemble>.r<rank>.h5``. With B chains per replica the per-configuration
datasets have shape ``(N, B, ...)``: axis 0 is the stored configuration, axis 1 the chain.

    configs (N, B, *field_shape)   traj (N,)          accepted, logp, logq, dH (N, B)
    crc32   (N, B) uint32          obs/<name> (N, B)  proposal_logw, accept_prob (N, B)
    proposal_obs/<name> (N, B)     (flow ensembles only)

``logq`` is NaN for kernels without a proposal density (HMC, local) and ``dH`` NaN for those
without a Hamiltonian (flow, local). ``proposal_logw`` = log p̃ − log q of the proposal made at
that update (NaN without a proposal density); it gives the reweighting ESS, the Pareto k̂ and, with
``proposal_obs/<name>`` (the observables of that same proposal, accepted or not), the all-proposal
reweighted estimate. One float per proposal and observable: the rejected configurations themselves
are never stored. ``accept_prob`` is the
kernel's acceptance probability of that update, min(1, e^{log ratio}) for HMC and the flow, and for a
local-update sweep its fraction of accepted site updates (where ``accepted`` only says "some moved").

``row_crc32`` (N, K) uint32 holds, for each stored row, the CRC-32 of that row of each of the K other
datasets named in its ``columns`` attribute (``crc32`` covers ``configs``), and the root attribute
``provenance_sha256`` the SHA-256 of the ``card`` and ``theory`` attributes, so that ``verify`` detects
and names any later change to any stored dataset or to the card.

All datasets are chunked, resizable along axis 0 and appended together. The root attribute
``status`` is "running" until the run finishes, then "complete", so an interrupted or failed
run never leaves a file that looks complete.

Crash safety. A file is written in HDF5's single-writer/multiple-reader (SWMR) mode (file format
bounds ``LIBVER``): its metadata are flushed in an order that keeps the file on disk a valid HDF5
file at every moment, so a writer killed with SIGKILL, even in the middle of an append, leaves a
readable file holding every block flushed before the kill (its rows may disagree in length across
datasets; a resume truncates them all to the checkpoint's count). Such a file keeps the "open for
writing" flags of its superblock: readers open it in SWMR-read mode, and ``reopen`` clears the
flags (what ``h5clear -s`` does, ``mcmc.io.swmr``) before appending again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numba
import numpy as np

from mcmc.io.swmr import SuperblockError, clear_open_flags

FORMAT_VERSION = 1
LIBVER = ("v110", "v110")  # superblock v3, readable by HDF5 >= 1.10; needed for SWMR
CHAIN_DATASETS = ("accepted", "logp", "logq", "dH", "proposal_logw", "accept_prob")
ROW_CRC = "row_crc32"


def row_columns(obs_names: list[str]) -> list[str]:
    """The datasets ``row_crc32`` covers, in its column order: everything but ``configs`` itself."""
    return ["traj", "crc32", *CHAIN_DATASETS, *(f"obs/{k}" for k in obs_names)]


def _crc_table() -> np.ndarray:
    """The 256-entry table of the reflected CRC-32 polynomial 0xEDB88320 (zlib's CRC-32)."""
    table = np.arange(256, dtype=np.uint64)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ 0xEDB88320, table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()


@numba.njit(cache=True)
def _crc_rows(data: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(data.shape[0]):
        c = np.uint32(0xFFFFFFFF)
        for j in range(data.shape[1]):
            c = table[(c ^ data[i, j]) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        out[i] = c ^ np.uint32(0xFFFFFFFF)


def rows_crc32(values: np.ndarray) -> np.ndarray:
    """CRC-32 (zlib's) of each row's bytes (C order, stored dtype): ``(n, ...) -> (n,)`` uint32, in one
    compiled loop."""
    values = np.ascontiguousarray(values)
    row_bytes = values.itemsize * int(np.prod(values.shape[1:]))
    out = np.empty(len(values), dtype=np.uint32)
    _crc_rows(values.view(np.uint8).reshape(len(values), row_bytes), _CRC_TABLE, out)
    return out


def provenance_sha256(card: str, theory: str) -> str:
    """SHA-256 of the ``card`` and ``theory`` root attributes (the ``provenance_sha256`` attribute)."""
    return hashlib.sha256(f"{card}\0{theory}".encode()).hexdigest()


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
    """CRC-32 (zlib's) of each configuration's bytes (C order, stored dtype); ``(n, B, ...) -> (n, B)``
    uint32."""
    n, b = configs.shape[:2]
    return rows_crc32(np.reshape(configs, (n * b, *configs.shape[2:]))).reshape(n, b)


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
    accept_prob: np.ndarray  # (n, B)
    obs: Mapping[str, np.ndarray]  # name -> (n, B)
    proposal_obs: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (n, B), flow only

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
    """Append-only writer of one replica file; every dataset grows together, one ``Block`` at a time.

    The file stays open in SWMR mode between blocks, and every append ends with a flush.
    """

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
        proposal_obs_names: tuple[str, ...] = (),
    ) -> EnsembleWriter:
        """Create a new file with empty datasets and provenance attributes; refuses to overwrite.
        ``proposal_obs_names``: the observables stored for every proposal (flow kernels)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(path, "x", libver=LIBVER)
        config_bytes = int(np.prod(field_shape)) * n_chains * np.dtype(field_dtype).itemsize
        rows = int(min(256, max(1, 2**20 // max(config_bytes, 1))))
        _create(f, "configs", (n_chains, *field_shape), field_dtype, rows)
        _create(f, "traj", (), np.int64, 1024)
        _create(f, "crc32", (n_chains,), np.uint32, 1024)
        _create(f, "accepted", (n_chains,), np.bool_, 1024)
        for name in CHAIN_DATASETS[1:]:  # the float64 ones, after the boolean ``accepted``
            _create(f, name, (n_chains,), np.float64, 1024)
        for name in obs_names:
            _create(f, f"obs/{name}", (n_chains,), np.float64, 1024)
        for name in proposal_obs_names:
            _create(f, f"proposal_obs/{name}", (n_chains,), np.float64, 1024)
        columns = row_columns(obs_names) + [f"proposal_obs/{k}" for k in proposal_obs_names]
        _create(f, ROW_CRC, (len(columns),), np.uint32, 1024)
        f[ROW_CRC].attrs["columns"] = json.dumps(columns)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["code_version"] = code_version()
        f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _begin_writing(f, attrs)
        return cls(path, f)

    @classmethod
    def reopen(cls, path: str | Path, n_rows: int, attrs: Mapping[str, Any] | None = None) -> EnsembleWriter:
        """Open an existing file for appending, truncated to its first ``n_rows`` rows (the checkpoint's).

        A file left by a killed writer is recovered first (its open-for-writing flags are cleared);
        ``attrs`` are updated before appending starts.
        """
        f = _open_for_writing(Path(path))
        datasets = _row_datasets(f)
        n_have = min(ds.shape[0] for ds in datasets)
        if n_have < n_rows:
            f.close()
            raise StoreError(f"{path}: holds {n_have} configurations, fewer than the checkpoint's {n_rows}")
        for ds in datasets:
            ds.resize(n_rows, axis=0)
        _begin_writing(f, attrs or {})
        return cls(path, f)

    @property
    def n_rows(self) -> int:
        return int(self._f["traj"].shape[0])

    def append(self, block: Block) -> None:
        """Append one block to every dataset, flush and fsync it (``traj`` is grown last)."""
        n0, n = self.n_rows, len(block)
        if n == 0:
            return
        columns = {
            "configs": block.configs,
            "crc32": config_crc32(block.configs),
            "accepted": block.accepted,
            "logp": block.logp,
            "logq": block.logq,
            "dH": block.dH,
            "proposal_logw": block.proposal_logw,
            "accept_prob": block.accept_prob,
            **{f"obs/{k}": v for k, v in block.obs.items()},
            **{f"proposal_obs/{k}": v for k, v in block.proposal_obs.items()
               if f"proposal_obs/{k}" in self._f},  # absent in files of older versions
            "traj": block.traj,
        }
        if ROW_CRC in self._f:  # files from before row checksums have none
            names = json.loads(self._f[ROW_CRC].attrs["columns"])
            crcs = [rows_crc32(np.asarray(columns[k], self._f[k].dtype)) for k in names]
            columns[ROW_CRC] = np.stack(crcs, axis=1)
            columns["traj"] = columns.pop("traj")  # still grown last
        for name, values in columns.items():
            ds = self._f[name]
            ds.resize(n0 + n, axis=0)
            ds[n0:] = values
        self._f.flush()
        os.fsync(self._f.id.get_vfd_handle())  # on disk before the checkpoint that counts these rows

    def close(self, complete: bool = False, timing: Mapping[str, float] | None = None) -> None:
        """Close the file; mark it ``status = complete`` only when ``complete`` is true.

        ``timing`` holds the cumulative totals over every session of this file (the job keeps them in
        its checkpoint, so a killed session's cost up to its last checkpoint is counted):
        ``therm_s``, ``sample_s``, ``train_s`` and their CPU-time twins ``*_cpu_s``.
        Status and timing are written after the SWMR session is closed, in a short ordinary session.
        """
        if not self._f.id.valid:
            return
        self._f.close()
        if complete or timing:
            with h5py.File(self.path, "r+", libver=LIBVER) as f:
                for key, value in (timing or {}).items():
                    f.attrs[key] = float(value)
                if complete:
                    f.attrs["status"] = "complete"


def _begin_writing(f: h5py.File, attrs: Mapping[str, Any]) -> None:
    """Mark the file ``status = running``, write ``attrs``, seal the provenance, flush, and switch to SWMR
    writing."""
    f.attrs["status"] = "running"
    for key, value in attrs.items():
        f.attrs[key] = value
    _seal_provenance(f)
    f.flush()
    _start_swmr(f)


def _seal_provenance(f: h5py.File) -> None:
    if "card" in f.attrs and "theory" in f.attrs:
        f.attrs["provenance_sha256"] = provenance_sha256(str(f.attrs["card"]), str(f.attrs["theory"]))


def _start_swmr(f: h5py.File) -> None:
    """Switch to SWMR writing; files from before SWMR (superblock < v3) stay in ordinary mode."""
    try:
        f.swmr_mode = True
    except (ValueError, RuntimeError, OSError):
        f.flush()


def _open_for_writing(path: Path) -> h5py.File:
    """``r+`` with the file-format bounds of ``LIBVER``, clearing a killed writer's flags if needed."""
    if not path.is_file():
        raise StoreError(f"no such ensemble file: {path}")
    try:
        return h5py.File(path, "r+", libver=LIBVER)
    except OSError as exc:
        try:
            cleared = left_open(exc) and clear_open_flags(path)
        except SuperblockError as damaged:
            raise StoreError(str(damaged)) from None
        if not cleared:
            raise StoreError(f"{path}: cannot be opened for appending ({exc})") from None
    return h5py.File(path, "r+", libver=LIBVER)


def left_open(exc: OSError) -> bool:
    """Whether opening a file failed because its superblock still flags it open for writing."""
    return "already open for write" in str(exc)


def _row_datasets(f: h5py.File) -> list[h5py.Dataset]:
    """Every dataset indexed by stored configuration (all of them, including ``obs/*``)."""
    found: list[h5py.Dataset] = []
    f.visititems(lambda _name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


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

"""Reading HDF5 ensembles (the layout is described in ``mcmc.io.store``): one replica file opened
read-only with its format version checked, whether complete, still being written or left by a killed
writer, and its provenance and in-stream observables read into an ``Ensemble``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mcmc.io.store import FORMAT_VERSION, StoreError, left_open
from mcmc.io.swmr import recorded_size


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
    accept_prob: np.ndarray  # (N, B)
    obs: Mapping[str, np.ndarray]  # name -> (N, B)
    proposal_obs: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N, B), flow only


def open_for_reading(path: str | Path) -> h5py.File:
    """Open an ensemble file read-only, turning every failure into a one-line ``StoreError``."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no such ensemble file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        f = _open_left_open(path, exc)
    version = f.attrs.get("format_version")
    if version != FORMAT_VERSION:
        f.close()
        shown = "missing" if version is None else str(version)
        raise StoreError(f"{path}: format_version {shown} is not the supported {FORMAT_VERSION}")
    return f


def _open_left_open(path: Path, exc: OSError) -> h5py.File:
    """A file still flagged open for writing (a live or killed writer) is read in SWMR-read mode."""
    if left_open(exc):
        try:
            return h5py.File(path, "r", swmr=True)
        except OSError as exc2:
            exc = exc2
    recorded, size = recorded_size(path), path.stat().st_size
    if recorded is not None and size < recorded:
        raise StoreError(
            f"{path}: truncated file, {size} bytes of the {recorded} its HDF5 superblock records"
        )
    raise StoreError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_ensemble(path: str | Path) -> Ensemble:
    """Read the provenance and in-stream observables of one replica file (configs are not loaded).

    Rows are cut to ``traj``'s length (grown last by the writer), so a file still being written, or
    left by a killed writer, reads as its complete rows.
    """
    with open_for_reading(path) as f:
        try:
            traj = f["traj"][()]
            n = len(traj)
            obs = {name: f["obs"][name][:n] for name in f.get("obs", {})}
            proposal_obs = {name: f["proposal_obs"][name][:n] for name in f.get("proposal_obs", {})}
            return Ensemble(
                path=Path(path),
                attrs=dict(f.attrs),
                theory=json.loads(f.attrs["theory"]),
                traj=traj,
                accepted=f["accepted"][:n],
                logp=f["logp"][:n],
                logq=f["logq"][:n],
                proposal_logw=f["proposal_logw"][:n],
                accept_prob=f["accept_prob"][:n],
                obs=obs,
                proposal_obs=proposal_obs,
            )
        except (KeyError, ValueError) as exc:
            raise StoreError(f"{path}: not a latflow ensemble ({exc})") from None

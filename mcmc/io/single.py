"""One stored configuration of a replica file, for the exporters (NERSC, ILDG)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from mcmc.io.ensemble import open_for_reading
from mcmc.io.store import StoreError


class StoredConfig(NamedTuple):
    """``links (*field_shape)`` of one chain at one stored update ``traj``, and the file's ensemble id."""

    links: np.ndarray
    traj: int
    ensemble_id: str


def stored_config(ensemble: str | Path, index: int = -1, chain: int = 0) -> StoredConfig:
    """Configuration ``index`` (negative: from the end) of chain ``chain``; a missing one is a
    one-line :class:`StoreError`."""
    with open_for_reading(ensemble) as f:
        configs = f["configs"]
        n, n_chains = configs.shape[0], configs.shape[1]
        i = index + n if index < 0 else index
        if not (0 <= i < n and 0 <= chain < n_chains):
            raise StoreError(
                f"{ensemble}: no configuration {index}, chain {chain} ({n} stored, {n_chains} chains)"
            )
        return StoredConfig(configs[i, chain], int(f["traj"][i]), str(f.attrs.get("ensemble_id", "latflow")))

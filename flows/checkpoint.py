"""Flow checkpoints: atomic writes, loading with a check of the theory and architecture they were made
for, warm starts from another lattice size or coupling, and the trained flow rebuilt from a file.

A checkpoint is a ``torch.save`` of plain containers and tensors (``weights_only`` loadable) with
``format`` = ``CHECKPOINT_FORMAT``, ``theory`` (its ``params()``), ``flow_config``, ``model`` (the weights
that sampling uses: the best flow by validation ESS when training validated) and, for a resume,
``current`` (the weights training continues from), optimizer, generator and metric history
(``flows.train.checkpoint_payload``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flows.model import Flow

CHECKPOINT_FORMAT = "latflow.flow_checkpoint/1"


class CheckpointMismatch(ValueError):
    """A checkpoint was made for another theory or flow architecture than the one asked for."""


def theory_params(theory: Any) -> dict[str, Any]:
    """The theory as stored in a checkpoint: its ``params()``."""
    return theory.params() if hasattr(theory, "params") else {"repr": repr(theory)}


def flow_config_dict(flow: Flow) -> dict[str, Any]:
    """The flow's architecture as stored in a checkpoint (plain containers)."""
    return flow.config.to_dict() if flow.config is not None else {}


def _check_match(saved: Mapping[str, Any], theory: Any, flow_config: Mapping[str, Any], path: Path) -> None:
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path} is not a latflow flow checkpoint (format {saved.get('format')!r})")
    want = theory_params(theory)
    if saved["theory"] != want:
        raise CheckpointMismatch(f"{path} was trained for theory {saved['theory']}, not {want}")
    if flow_config and saved["flow_config"] != dict(flow_config):
        raise CheckpointMismatch(f"{path} holds flow {saved['flow_config']}, not {dict(flow_config)}")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors and plain containers only) atomically: a temporary file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(
    path: str | os.PathLike, theory: Any, flow_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check that it was made for ``theory``
    (and for ``flow_config`` when given); a mismatch raises :class:`CheckpointMismatch`."""
    path = Path(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    _check_match(saved, theory, flow_config or {}, path)
    return saved


def warm_start(flow: Flow, path: str | os.PathLike) -> dict[str, Any]:
    """Load the weights of the checkpoint at ``path`` into ``flow`` (in place) and return the
    checkpoint's theory. The architectures must agree (``CheckpointMismatch`` otherwise); the theory
    may differ, e.g. in lattice size or coupling, which is the point."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatch(f"train.init_from: no such flow checkpoint: {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path} is not a latflow flow checkpoint (format {saved.get('format')!r})")
    if saved["flow_config"] != flow_config_dict(flow):
        raise CheckpointMismatch(
            f"train.init_from: {path} holds flow {saved['flow_config']}, not {flow_config_dict(flow)}"
        )
    try:
        flow.load_state_dict(saved["model"])
    except RuntimeError as exc:  # e.g. the φ⁴ Fourier layer, whose weights depend on the lattice size
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointMismatch(f"train.init_from: {path} does not fit this flow ({first})") from None
    return saved["theory"]

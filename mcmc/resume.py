"""Every check a replica job makes before it writes anything: may it start, and from which checkpoint.

``plan_start`` runs while the job holds the replica's lock and before any byte of an existing
ensemble, checkpoint or flow file changes. It refuses (``JobError``, one line):

- an existing ensemble without ``--resume`` or ``--overwrite``, and the two flags together;
- ``--resume`` of an ensemble that holds configurations but has lost its checkpoint (it is never
  replaced; the message says how to recover);
- ``--resume`` with a card that changed anything but ``sample.n_configs`` (which may only grow) and
  ``sample.progress``/``device``: the message names the first changed key and both values;
- an unreadable checkpoint (naming the file).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import h5py
import torch
import yaml

from mcmc.io.ensemble import open_for_reading
from mcmc.io.store import checkpoint_path
from mcmc.plan import Provenance
from mcmc.runtime import JobError

log = logging.getLogger("latflow")


BOTH_FLAGS = "--resume and --overwrite exclude each other: --resume continues, --overwrite replaces"


def chain_settings(card: Provenance, n_replicas: int) -> dict[str, int]:
    """Settings besides the physics hash that a resumed chain must share with its start: the card's
    ``sample`` keys ``card.chain_keys`` and the number of replicas."""
    sample = card.tree["sample"]
    return {**{f"sample.{key}": sample[key] for key in card.chain_keys}, "n_replicas": n_replicas}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equality that holds for NaN == NaN and for a list against a tuple."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def changed_key(stored: dict[str, Any], card: Provenance) -> tuple[str, Any, Any] | None:
    """The first key (dotted) whose value differs between the stored card and ``card``'s, with both values;
    a key the stored card lacks counts as its ``card.absent_as`` value (keys added to the card later)."""
    now = card.tree
    for section in card.fixed_sections:
        was_flat, now_flat = _flat(stored.get(section), section), _flat(now.get(section), section)
        for key in sorted(set(was_flat) | set(now_flat)):
            added = key not in was_flat and key in card.absent_as
            if added and same_value(now_flat[key], card.absent_as[key]):
                continue  # a key added to the card later, at the value the stored card ran with
            if not same_value(was_flat.get(key), now_flat.get(key)):
                return key, was_flat.get(key), now_flat.get(key)
    sample_was = stored.get("sample") or {}
    for key in card.chain_keys:
        if key in sample_was and sample_was[key] != now["sample"][key]:
            return f"sample.{key}", sample_was[key], now["sample"][key]
    return None


def read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """A chain checkpoint, or a one-line ``JobError`` naming the file when it cannot be read."""
    try:
        payload = torch.load(ckpt, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise JobError(
            f"{ckpt}: not a readable latflow checkpoint ({type(exc).__name__}: {first}); "
            "restore it from a backup, or see 'no checkpoint' in the README for the recovery paths"
        ) from None
    needed = ("state", "generator", "update", "n_stored", "physics_hash", "model_hash")
    if not isinstance(payload, dict) or any(k not in payload for k in needed):
        raise JobError(f"{ckpt}: not a latflow chain checkpoint (keys missing)")
    return payload


def stored_state(path: Path) -> tuple[dict[str, Any], int, dict[str, float]]:
    """The card stored in an ensemble file, its number of whole rows, and its cumulative timing attributes."""
    with open_for_reading(path) as f:
        card = yaml.safe_load(str(f.attrs.get("card", ""))) or {}
        rows: list[int] = []
        f.visititems(lambda _n, obj: rows.append(obj.shape[0]) if isinstance(obj, h5py.Dataset) else None)
        timing = {k: float(v) for k, v in f.attrs.items() if k.endswith("_s") and not k.startswith("train")}
    return (card if isinstance(card, dict) else {}), min(rows, default=0), timing


def _no_checkpoint(path: Path, ckpt: Path, n_rows: int) -> JobError:
    return JobError(
        f"{path} holds {n_rows} configurations but its checkpoint {ckpt.name} is missing, so --resume "
        "can neither continue nor replace it: the file is usable as it is (latflow verify / measure); "
        "to get more configurations start another replica set (new out, name or seed), or pass "
        "--overwrite to discard it"
    )


def check_payload(ckpt: Path, payload: dict[str, Any], card: Provenance, n_replicas: int) -> None:
    """Refuse a checkpoint made for another chain (a backstop beside the stored card's comparison)."""
    if payload["physics_hash"] not in (card.physics_hash, *card.legacy_hashes):
        raise JobError(
            f"{ckpt}: resume refused, the card changed the theory, sampler, flow, seed or dtype "
            "since this ensemble was started (only sample.n_configs may grow)"
        )
    for key, was in payload.get("chain", {}).items():
        now = chain_settings(card, n_replicas).get(key)
        if now != was:
            raise JobError(
                f"{ckpt}: resume refused, {key} was {was} and is now {now} (only sample.n_configs may grow)"
            )
    n_configs = card.tree["sample"]["n_configs"]
    if n_configs < payload["n_stored"]:
        raise JobError(
            f"{ckpt}: resume refused, sample.n_configs = {n_configs} is below the "
            f"{payload['n_stored']} configurations already stored (n_configs may only grow)"
        )


def plan_start(
    card: Provenance, path: Path, n_replicas: int, *, resume: bool, overwrite: bool
) -> dict[str, Any] | None:
    """The checkpoint to continue from (with ``"timing"``, the cumulative costs so far), or None for a
    fresh start; ``card``: the provenance of the job's plan (``mcmc.plan``). Reads only; every refusal
    is raised here, before anything is written."""
    if resume and overwrite:
        raise JobError(BOTH_FLAGS)
    if not path.exists() or overwrite:
        return None
    if not resume:
        raise JobError(
            f"{path} already holds an ensemble; pass --resume to continue it or --overwrite to replace it"
        )
    ckpt = checkpoint_path(path)
    stored, n_rows, timing = stored_state(path)
    if not ckpt.exists():
        if n_rows == 0:
            log.info("%s holds no configurations and no checkpoint: starting it afresh", path)
            return None
        raise _no_checkpoint(path, ckpt, n_rows)
    payload = read_checkpoint(ckpt)
    changed = changed_key(stored, card)
    if changed is not None:
        key, was, now = changed
        raise JobError(
            f"{path}: resume refused, {key} was {json.dumps(was)} and is now {json.dumps(now)} "
            "(only sample.n_configs may grow)"
        )
    check_payload(ckpt, payload, card, n_replicas)
    if n_rows < payload["n_stored"]:
        raise JobError(
            f"{path}: holds {n_rows} configurations, fewer than its checkpoint's {payload['n_stored']}"
        )
    payload.setdefault("timing", timing)  # checkpoints from before cumulative timing: the file's totals
    return payload

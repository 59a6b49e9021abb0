"""Which flow family serves which theory (its configuration dataclass and its builder), and the one
loader of saved flows.

Every builder has the calling convention of ``flows.model.build_flow``:
``build(theory, config, *, generator=None, dtype=torch.float32, device="cpu") -> Flow``, and every
config class has ``from_mapping`` (rejecting unknown keys) and ``to_dict``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from flows.checkpoint import load_checkpoint
from flows.model import Flow, FlowConfig, build_flow
from flows.sun.config import SUNFlowConfig
from flows.sun.flow import build_sun_flow
from flows.u1.config import U1FlowConfig
from flows.u1.flow import build_u1_flow
from lattice.theories import Theory


class FlowFamily(NamedTuple):
    """A theory's flow: ``config`` (a frozen dataclass type), ``build`` (its builder) and
    ``train_defaults``, the training keys a run card gets for this family unless it sets them."""

    config: type
    build: Callable[..., Any]
    train_defaults: dict[str, Any] = {}


# path gradients (lower variance per CPU second than reparam, see the README's estimator table) and model
# selection by validation ESS, so training never hands over a flow worse than its start
TRAIN_DEFAULTS = {"estimator": "path", "eval_every": 100, "eval_batch": 512}


_FAMILIES: dict[str, FlowFamily] = {
    "phi4": FlowFamily(FlowConfig, build_flow, TRAIN_DEFAULTS),
    "u1": FlowFamily(U1FlowConfig, build_u1_flow, TRAIN_DEFAULTS),
    "sun": FlowFamily(SUNFlowConfig, build_sun_flow, {**TRAIN_DEFAULTS, "eval_batch": 256}),
}


def register_flow_family(theory_name: str, family: FlowFamily) -> None:
    """Serve ``theory_name`` with ``family`` (replacing any earlier registration)."""
    _FAMILIES[theory_name] = family


def flow_families() -> dict[str, FlowFamily]:
    """Flow families by theory name (``theory.name``): φ⁴, 2D U(1) and SU(N) in D = 2 … 4 built in."""
    return dict(_FAMILIES)


def flow_family(theory_name: str) -> FlowFamily:
    """The flow family for ``theory_name``; ``ValueError`` if the theory has none."""
    if theory_name not in _FAMILIES:
        raise ValueError(f"no flow exists for theory {theory_name!r}; flows exist for {', '.join(_FAMILIES)}")
    return _FAMILIES[theory_name]


def flow_from_checkpoint(
    saved: Mapping[str, Any], theory: Theory, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Flow:
    """The flow of a checkpoint already read by ``flows.checkpoint.load_checkpoint``, rebuilt by the theory's
    family from its saved architecture, in eval mode."""
    flow = flow_family(theory.name).build(theory, saved["flow_config"], dtype=dtype, device=device)
    flow.load_state_dict(saved["model"])
    return flow.eval()


def load_flow(
    path: str | os.PathLike, theory: Theory, config: Any = None, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Flow:
    """The trained flow stored at ``path`` (by ``flows.train.train_flow``), for any family: checked against
    ``theory`` and, when given, ``config`` (the family's config or a mapping), else
    ``flows.checkpoint.CheckpointMismatch``; rebuilt from its saved architecture, in eval mode."""
    if config is not None:
        config = flow_family(theory.name).config.of(config).to_dict()
    return flow_from_checkpoint(load_checkpoint(path, theory, config), theory, dtype=dtype, device=device)

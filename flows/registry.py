"""Which flow family serves which theory: its configuration dataclass and its builder.

Every builder has the calling convention of ``flows.model.build_flow``:
``build(theory, config, *, generator=None, dtype=torch.float32, device="cpu") -> Flow``, and every
config class has ``from_mapping`` (rejecting unknown keys) and ``to_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class FlowFamily(NamedTuple):
    """A theory's flow: ``config`` (a frozen dataclass type), ``build`` (its builder) and
    ``train_defaults``, the training keys a run card gets for this family unless it sets them."""

    config: type
    build: Callable[..., Any]
    train_defaults: dict[str, Any] = {}


# path gradients (lower variance per CPU second than reparam, see the README's estimator table) and model
# selection by validation ESS, so training never hands over a flow worse than its start
TRAIN_DEFAULTS = {"estimator": "path", "eval_every": 100, "eval_batch": 512}


def flow_families() -> dict[str, FlowFamily]:
    """Flow families by theory name (``theory.name``): φ⁴, 2D U(1) and SU(N) in D = 2 … 4."""
    from flows.model import FlowConfig, build_flow
    from flows.sun.config import SUNFlowConfig
    from flows.sun.flow import build_sun_flow
    from flows.u1.flow import U1FlowConfig, build_u1_flow

    return {
        "phi4": FlowFamily(FlowConfig, build_flow, TRAIN_DEFAULTS),
        "u1": FlowFamily(U1FlowConfig, build_u1_flow, TRAIN_DEFAULTS),
        "sun": FlowFamily(SUNFlowConfig, build_sun_flow, {**TRAIN_DEFAULTS, "eval_batch": 256}),
    }


def flow_family(theory_name: str) -> FlowFamily:
    """The flow family for ``theory_name``; ``ValueError`` if the theory has none."""
    families = flow_families()
    if theory_name not in families:
        raise ValueError(f"no flow exists for theory {theory_name!r}; flows exist for {', '.join(families)}")
    return families[theory_name]

"""Curriculum training (``train.stages``): stages that precede the card's own training.

Each stage is a mapping of theory keys (e.g. shape, lam, m2, beta: any key of the card's theory but
``name``) and training keys (any of ``flows.train.TrainConfig`` but ``stages``), which override the card
for that stage. The stages run in order, then the card's own training; each starts from the weights the
previous one ended with (the best validated, under ``eval_every``). The conditioners are
translation-equivariant convolutions, so weights learned at L = 8 start L = 16; a weight whose shape
depends on the lattice is carried by its module's ``resize_parameter`` (the φ⁴ Fourier layer's ρ_k,
interpolated in momentum), or else starts fresh. Stage i's checkpoint is
``<out>/<ensemble>.stage<i>.flow.pt``; the training cost of a run is the sum over its stages and its own
training. The stage cards are made, and checked when the card is read, by ``mcmc.card.stage_cards``;
``mcmc.setup`` turns each into a stage of the flow spec (``mcmc.training.Stage``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from flows.checkpoint import CheckpointMismatch, load_checkpoint
from flows.train import last_cpu_seconds

log = logging.getLogger("latflow")


def carry_weights(source: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """Copy every tensor of ``source``'s state into ``target`` where the name and shape agree, and where
    only the shape differs through the owning module's ``resize_parameter(name, tensor)`` when it has
    one (a lattice-size dependent layer such as ``FourierScaling``); returns the names left at
    ``target``'s own values."""
    mine, kept = target.state_dict(), []
    modules = dict(target.named_modules())
    for name, tensor in source.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        resize = getattr(modules.get(owner), "resize_parameter", None)
        if name in mine and mine[name].shape == tensor.shape:
            mine[name] = tensor.to(mine[name].device, mine[name].dtype)
        elif name in mine and resize is not None:
            mine[name] = resize(leaf, tensor).to(mine[name].device, mine[name].dtype)
        else:
            kept.append(name)
    kept += [name for name in mine if name not in source.state_dict()]
    target.load_state_dict(mine)
    return kept


def stage_costs(stages: Iterable[tuple[Path, Any, dict[str, Any]]]) -> tuple[float, float]:
    """(seconds, CPU seconds) of the stages' stored trainings, given each stage's checkpoint path, theory
    and flow config (NaN CPU seconds when one is missing)."""
    seconds, cpu = 0.0, 0.0
    for path, theory, flow_config in stages:
        try:
            saved = load_checkpoint(path, theory, flow_config)
        except (FileNotFoundError, CheckpointMismatch):
            return seconds, math.nan
        seconds += float(saved["seconds"])
        cpu += last_cpu_seconds(saved["metrics"], default=0.0)
    return seconds, cpu

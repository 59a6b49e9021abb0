"""Flows inside a sampling job: train (or load) the flow for a card, and wrap it as an independence kernel.

The trained flow lives at ``<out>/<ensemble>.flow.pt``, beside the ensemble. Its checkpoint records
the theory and architecture it was trained for; a checkpoint for anything else is refused with a
one-line error and never used. An unfinished training (killed, or fewer steps than the card asks
for, within the time budget) is resumed where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from flows.model import Flow, FlowConfig, build_flow
from flows.train import TrainConfig, load_checkpoint, load_flow, train_flow
from mcmc.build import build_theory, resolve_device, torch_generator, train_seed_sequence
from mcmc.card import Card, CardError
from mcmc.job import KernelBuild, World, model_hash

log = logging.getLogger("latflow")


def flow_path(card: Card) -> Path:
    """``<out>/<ensemble>.flow.pt``."""
    return Path(card.out) / f"{card.ensemble}.flow.pt"


def flow_config(card: Card) -> FlowConfig:
    try:
        return FlowConfig.from_mapping(card.flow.model_dump())
    except ValueError as exc:
        raise CardError(f"card: flow: {exc}") from None


def train_config(card: Card) -> TrainConfig:
    try:
        return TrainConfig.from_mapping(card.train.model_dump())
    except ValueError as exc:
        raise CardError(f"card: train: {exc}") from None


def _finished(saved: dict[str, Any], config: TrainConfig) -> bool:
    """Training is done when it reached its steps or spent its time budget."""
    out_of_time = config.max_seconds is not None and saved["seconds"] >= config.max_seconds
    return saved["step"] >= config.steps or out_of_time


def trained_flow(
    card: Card, theory: Any, device: torch.device, *, progress: bool, resume: bool = True
) -> tuple[Flow, float]:
    """The flow for ``card``: loaded when a finished matching checkpoint exists, else trained.

    Returns the flow (float32, on ``device``) and the training seconds it cost (cumulative).
    """
    path, fcfg, tcfg = flow_path(card), flow_config(card), train_config(card)
    if path.exists():
        saved = load_checkpoint(path, theory, fcfg.to_dict())  # raises CheckpointMismatch
        if _finished(saved, tcfg):
            log.info("using trained flow %s (%d steps, %.1f s)", path, saved["step"], saved["seconds"])
            return load_flow(path, theory, fcfg, device=device), float(saved["seconds"])
        log.info("resuming flow training from %s at step %d", path, saved["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch_generator(train_seed_sequence(card.seed), device)
    flow = build_flow(theory, fcfg, generator=generator, device=device)
    result = train_flow(
        flow,
        theory,
        tcfg,
        generator,
        checkpoint_path=path,
        resume=resume and path.exists(),
        progress=progress,
    )
    log.info(
        "trained flow: %d steps in %.1f s (%d skipped), final ESS %.3f",
        result.steps_done,
        result.seconds,
        result.n_skipped,
        float(result.metrics["ess"][-1]) if result.steps_done else 0.0,
    )
    _plot_training(result.metrics, Path(card.out) / "plots" / "training.png")
    return flow, result.seconds


def _plot_training(metrics: dict[str, Any], path: Path) -> None:
    import numpy as np

    from observables.plots import plot_training

    if len(metrics.get("loss", [])):
        plot_training({**metrics, "step": np.arange(1, len(metrics["loss"]) + 1)}, path)


def flow_kernel(
    card: Card, theory: Any, device: torch.device, dtype: torch.dtype, world: World, progress: bool
) -> KernelBuild:
    """Train or load the flow (rank 0 trains), then the independence-Metropolis kernel on it."""
    from mcmc.independence import IndependenceMetropolis

    flow, train_s = trained_flow(card, theory, device, progress=progress)
    proposal = flow.as_float64()
    kernel = IndependenceMetropolis(theory, proposal, batch=card.sample.proposal_batch)
    return KernelBuild(kernel, train_s=train_s, model_hash=model_hash(proposal.state_dict()))


def train_only(card: Card, world: World, *, resume: bool, progress: bool) -> None:
    """``latflow train``: fit the flow for ``card`` and save its checkpoint."""
    theory = build_theory(card)
    device = resolve_device(card.device, world.local_rank)
    path = flow_path(card)
    if path.exists() and not resume:
        raise CardError(f"{path} exists; pass --resume to continue training it, or delete it to start over")
    _, seconds = trained_flow(card, theory, device, progress=progress, resume=resume)
    print(f"flow checkpoint: {path} (training time {seconds:.1f} s)")

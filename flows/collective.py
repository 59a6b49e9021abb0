"""The ranks a training step runs over: :class:`Collective` is one process alone, the default of
``flows.train.train_flow``; ``mcmc.distributed.RankCollective`` is a data-parallel job over MPI ranks.
The training loop calls only these methods, so that one loop serves both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flows.checkpoint import flow_config_dict, load_checkpoint, save_checkpoint


class Collective:
    """How :func:`train_flow` works with the other ranks of a data-parallel job; this base class is a
    process alone. ``mcmc.distributed.RankCollective`` all-reduces the gradients, gathers the
    log-weights, agrees on stopping and lets rank 0 read and write the checkpoint."""

    size: int = 1

    def share(self, n_total: int) -> int:
        """This rank's part of a total batch."""
        return n_total

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` over the ranks in place."""

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """A rank's ``(n,)`` tensor → the concatenation over the ranks, in rank order."""
        return t

    def agree(self, out_of_time: bool, stop: bool, seconds: float) -> tuple[bool, bool, float]:
        """(any rank out of time, any rank asked to stop, rank 0's seconds)."""
        return out_of_time, stop, seconds

    def load(self, path: Path | None, theory: Any, flow: Any) -> dict[str, Any] | None:
        """The checkpoint at ``path`` (checked against ``theory`` and the flow), or None when absent."""
        if path is None or not path.exists():
            return None
        return load_checkpoint(path, theory, flow_config_dict(flow))

    def restore_generator(self, saved: dict[str, Any], generator: torch.Generator) -> None:
        generator.set_state(saved["generator"])

    def save(self, path: Path | None, payload: Callable[[], dict[str, Any]],
             generator: torch.Generator) -> None:
        if path is not None:
            save_checkpoint(path, payload())

    def finish(self, flow: Any) -> None:
        """Called once at the end, on every rank (e.g. to check that the weights agree)."""

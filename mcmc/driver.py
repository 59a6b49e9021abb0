"""The ensemble driver: thermalise, then run B chains through any kernel, storing every k-th update.

It works only through the kernel protocol (``init``/``step``). Stored updates are measured in-stream,
buffered, and appended to the HDF5 file in blocks; after each block the chain checkpoint is written
atomically, so a killed run loses at most one block and a resumed run continues bit-identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from mcmc.io.store import Block, EnsembleWriter
from mcmc.kernels.protocol import ChainState, StepInfo

log = logging.getLogger("latflow")

Measure = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Schedule:
    """``n_therm`` unrecorded updates, then ``n_configs`` stored configurations, one per ``every`` updates."""

    n_therm: int
    n_configs: int
    every: int = 1
    block: int = 100

    @property
    def n_updates(self) -> int:
        return self.n_therm + self.n_configs * self.every

    def stores(self, update: int) -> bool:
        """Whether update number ``update`` (1-based, thermalisation included) is stored."""
        return update > self.n_therm and (update - self.n_therm) % self.every == 0


@dataclass(frozen=True)
class Position:
    """Where a run stands: updates done (thermalisation included) and configurations stored."""

    update: int = 0
    n_stored: int = 0


class Spent(NamedTuple):
    """Wall-clock and CPU seconds spent so far in this call, split into thermalisation and sampling."""

    therm_s: float
    sample_s: float
    therm_cpu_s: float
    sample_cpu_s: float


@dataclass(frozen=True)
class RunResult:
    """Outcome of ``run_chain``. ``acceptance`` is over this call's post-thermalisation updates."""

    state: ChainState
    position: Position
    acceptance: float
    therm_s: float
    sample_s: float
    interrupted: bool
    therm_cpu_s: float = 0.0  # CPU seconds of this process (all its threads), robust to other jobs
    sample_cpu_s: float = 0.0


def state_to_dict(state: ChainState) -> dict[str, Any]:
    """A kernel state as a plain dict of tensors and numbers (for ``torch.save`` with weights_only);
    a state with a ``compact()`` method (a proposal buffer) is compacted first."""
    if hasattr(state, "compact"):
        state = state.compact()
    return {f.name: getattr(state, f.name) for f in fields(state)}


def state_from_dict(template: ChainState, values: Mapping[str, Any]) -> ChainState:
    """Rebuild a state of the same type as ``template`` from ``state_to_dict`` output."""
    return replace(template, **values)


def _record(state: ChainState, info: StepInfo, measure: Measure, field_dtype: torch.dtype) -> dict:
    """One stored update as numpy arrays of shape ``(B, ...)``."""

    def cpu(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return {
        "configs": cpu(state.x.to(field_dtype)),
        "accepted": cpu(info.accepted),
        "logp": cpu(state.logp),
        "logq": cpu(info.logq),
        "dH": cpu(info.dH),
        "proposal_logw": cpu(info.proposal_logw),
        "accept_prob": cpu(info.accept_prob.to(torch.float64)),
        "obs": {k: cpu(v.to(torch.float64)) for k, v in measure(state.x).items()},
        "proposal_obs": {k: cpu(v) for k, v in (info.proposal_obs or {}).items()},
    }


def _block(records: list[dict], trajs: list[int]) -> Block:
    groups = ("obs", "proposal_obs")
    stack = {k: np.stack([r[k] for r in records]) for k in records[0] if k not in groups}
    grouped = {g: {k: np.stack([r[g][k] for r in records]) for k in records[0][g]} for g in groups}
    return Block(traj=np.asarray(trajs, dtype=np.int64), **grouped, **stack)


def run_chain(
    kernel: Any,
    state: ChainState,
    generator: torch.Generator,
    *,
    schedule: Schedule,
    measure: Measure,
    writer: EnsembleWriter,
    start: Position = Position(),
    field_dtype: torch.dtype = torch.float64,
    on_block: Callable[[ChainState, Position, Spent], None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    progress: bool = True,
    rate: str = "accepted",
) -> RunResult:
    """Advance the chains from ``start`` to the end of ``schedule``, writing stored updates in blocks.

    After each block is appended, ``on_block(state, position, spent)`` is called (to checkpoint, with
    the seconds spent so far). When ``stop_requested()`` turns true the current block is flushed and
    the run returns early. ``rate``: the ``StepInfo`` field averaged into ``acceptance`` (``accepted``,
    or ``accept_prob`` for local sweeps, whose ``accepted`` only says that some site moved).
    """
    pos, records, trajs = start, [], []
    n_acc, n_prop = 0.0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    therm_s = 0.0 if pos.update >= schedule.n_therm else None
    therm_cpu_s = 0.0
    bar = tqdm(
        total=schedule.n_updates,
        initial=pos.update,
        disable=not progress,
        unit="upd",
        desc="therm" if therm_s is None else "sample",
        dynamic_ncols=True,
        leave=False,
    )

    def spent() -> Spent:
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if therm_s is None:
            return Spent(wall, 0.0, cpu, 0.0)
        return Spent(therm_s, wall - therm_s, therm_cpu_s, cpu - therm_cpu_s)

    def flush() -> None:
        nonlocal pos, records, trajs
        if records:
            writer.append(_block(records, trajs))
            pos = replace(pos, n_stored=pos.n_stored + len(records))
            records, trajs = [], []
        if on_block is not None:
            on_block(state, pos, spent())

    interrupted = False
    try:
        while pos.update < schedule.n_updates:
            state, info = kernel.step(state, generator)
            pos = replace(pos, update=pos.update + 1)
            if pos.update > schedule.n_therm:
                if therm_s is None:
                    therm_s, therm_cpu_s = time.perf_counter() - t0, time.process_time() - c0
                    bar.set_description("sample")
                n_acc += float(getattr(info, rate).to(torch.float64).mean())
                n_prop += 1
                bar.set_postfix(acc=f"{n_acc / n_prop:.3f}", refresh=False)
            if schedule.stores(pos.update):
                records.append(_record(state, info, measure, field_dtype))
                trajs.append(pos.update)
                if len(records) >= schedule.block:
                    flush()
            bar.update(1)
            if stop_requested():
                interrupted = pos.update < schedule.n_updates
                break
        flush()
    finally:
        bar.close()
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    if therm_s is None:
        therm_s, therm_cpu_s = total, total_cpu
    acceptance = n_acc / n_prop if n_prop else float("nan")
    if pos.update == start.update:
        log.info("nothing to sample: the ensemble already holds all %d updates", pos.update)
    else:
        log.info(
            "sampled %d updates in %.2f s (therm %.2f s), acceptance %.3f",
            pos.update - start.update,
            total,
            therm_s,
            acceptance,
        )
    return RunResult(
        state, pos, acceptance, therm_s, total - therm_s, interrupted, therm_cpu_s, total_cpu - therm_cpu_s
    )

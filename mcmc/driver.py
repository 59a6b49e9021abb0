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


def state_from_dict(
    template: ChainState,
    values: Mapping[str, Any],
    rebuild: Callable[[torch.Tensor], ChainState] | None = None,
) -> ChainState:
    """Rebuild a state of the same type as ``template`` from ``state_to_dict`` output. A field the
    values lack (a checkpoint of an older version, e.g. HMC's cached force ``grad``) is recomputed by
    ``rebuild(values["x"])`` (the kernel's ``init``: fields derived from x); a field the template lacks,
    or a missing one without ``rebuild``, is refused (a checkpoint of another kernel's state)."""
    expected = {f.name for f in fields(template)}
    missing = expected - set(values)
    if set(values) - expected or "x" not in values or (missing and rebuild is None):
        raise ValueError(f"checkpoint state has fields {sorted(values)}, the kernel's {sorted(expected)}")
    if missing:
        fresh = rebuild(values["x"])
        values = {**{name: getattr(fresh, name) for name in missing}, **values}
    return replace(template, **values)


def _advance(kernel: Any, state: ChainState, generator: torch.Generator, n: int) -> tuple:
    """Up to ``n`` updates: through ``kernel.steps`` when the kernel has it (a flow's whole proposal
    buffer in one pass, bit-identical to stepping), else one ``step``. Returns the new state, a
    ``StepInfo`` with a leading update axis ``(m, B)``, and the fields ``(m, B, *L)`` and ``logp (m, B)``
    after each of the m updates done."""
    if hasattr(kernel, "steps"):
        return tuple(kernel.steps(state, generator, n))
    state, info = kernel.step(state, generator)
    rows = {f.name: getattr(info, f.name) for f in fields(info)}
    rows = {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else v) for k, v in rows.items()}
    if rows.get("proposal_obs") is not None:
        rows["proposal_obs"] = {k: v.unsqueeze(0) for k, v in rows["proposal_obs"].items()}
    return state, type(info)(**rows), state.x.unsqueeze(0), state.logp.unsqueeze(0)


def _records(
    x: torch.Tensor, logp: torch.Tensor, info: StepInfo, idx: list[int], measure: Measure,
    field_dtype: torch.dtype,
) -> dict[str, Any]:
    """The stored updates ``idx`` of a batch of updates as columns of numpy arrays ``(m, B, ...)`` (the
    groups ``obs`` and ``proposal_obs`` as dicts of them); the observables are measured on all of them in
    one call."""

    def cpu(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    m, b = len(idx), x.shape[1]
    xs = x[idx]
    measured = measure(xs.reshape(m * b, *xs.shape[2:]))
    return {
        "configs": cpu(xs.to(field_dtype)),
        "accepted": cpu(info.accepted[idx]),
        "logp": cpu(logp[idx]),
        "logq": cpu(info.logq[idx]),
        "dH": cpu(info.dH[idx]),
        "proposal_logw": cpu(info.proposal_logw[idx]),
        "accept_prob": cpu(info.accept_prob[idx].to(torch.float64)),
        "obs": {k: cpu(v.to(torch.float64).reshape(m, b)) for k, v in measured.items()},
        "proposal_obs": {k: cpu(v[idx]) for k, v in (info.proposal_obs or {}).items()},
    }


def _rows_until_flush(update: int, schedule: Schedule, n_records: int) -> int:
    """Updates from ``update`` to the end of thermalisation, or else to the stored update that fills the
    current block, or to the end of the schedule, whichever comes first (at least 1)."""
    end = schedule.n_updates - update
    if update < schedule.n_therm:
        return max(1, min(end, schedule.n_therm - update))
    k = (update - schedule.n_therm) // schedule.every + 1  # the next stored update is the k-th
    target = schedule.n_therm + (k + schedule.block - n_records - 1) * schedule.every
    return max(1, min(end, target - update))


def _block(chunks: list[dict[str, Any]], trajs: list[int]) -> Block:
    """One ``Block`` of the column chunks of ``_records``, concatenated along the update axis."""
    groups = ("obs", "proposal_obs")

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    cols = {k: cat([c[k] for c in chunks]) for k in chunks[0] if k not in groups}
    grouped = {g: {k: cat([c[g][k] for c in chunks]) for k in chunks[0][g]} for g in groups}
    return Block(traj=np.asarray(trajs, dtype=np.int64), **grouped, **cols)


class _Timer:
    """Wall-clock and CPU seconds since construction, and their values at the end of thermalisation
    (zero when the run starts thermalised)."""

    def __init__(self, thermalised: bool) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.therm: tuple[float, float] | None = (0.0, 0.0) if thermalised else None

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.t0, time.process_time() - self.c0

    def end_therm(self) -> bool:
        """Record the end of thermalisation once; True the first time."""
        if self.therm is not None:
            return False
        self.therm = self.elapsed()
        return True

    def spent(self) -> Spent:
        """The seconds spent so far, split into thermalisation and sampling."""
        wall, cpu = self.elapsed()
        if self.therm is None:
            return Spent(wall, 0.0, cpu, 0.0)
        return Spent(self.therm[0], wall - self.therm[0], self.therm[1], cpu - self.therm[1])


def _progress_bar(schedule: Schedule, pos: Position, progress: bool, thermalised: bool) -> tqdm:
    return tqdm(
        total=schedule.n_updates,
        initial=pos.update,
        disable=not progress,
        unit="upd",
        desc="sample" if thermalised else "therm",
        dynamic_ncols=True,
        leave=False,
    )


def _result(
    state: ChainState, pos: Position, start: Position, timer: _Timer, acc: tuple[float, int],
    interrupted: bool,
) -> RunResult:
    """The ``RunResult`` of a finished (or stopped) run, logged."""
    total, total_cpu = timer.elapsed()
    therm_s, therm_cpu_s = timer.therm if timer.therm is not None else (total, total_cpu)
    acceptance = acc[0] / acc[1] if acc[1] else float("nan")
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


class _Pending:
    """Stored updates not yet written: their column chunks (``_records``) and update numbers."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.trajs: list[int] = []

    def __len__(self) -> int:
        return len(self.trajs)

    def add(self, chunk: dict[str, Any], trajs: list[int]) -> None:
        self.chunks.append(chunk)
        self.trajs += trajs

    def write(self, writer: EnsembleWriter) -> int:
        """Append the pending updates as one block (if any), empty the buffer; returns how many."""
        n = len(self.trajs)
        if n:
            writer.append(_block(self.chunks, self.trajs))
            self.chunks, self.trajs = [], []
        return n


class _Acceptance:
    """The running sum of a chain-averaged ``StepInfo`` field over post-thermalisation updates."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor, sampled: list[int]) -> None:
        """``values (m, B)``: the field after each of m updates; ``sampled``: those past thermalisation."""
        self.total += float(values[sampled].to(torch.float64).mean(dim=1).sum())
        self.count += len(sampled)


def _count_sampled(
    acc: _Acceptance, values: torch.Tensor, updates: range, n_therm: int, timer: _Timer, bar: tqdm
) -> None:
    """After a batch of ``updates`` that reaches past thermalisation: mark its end once (timer and bar),
    add the post-thermalisation rows of ``values (m, B)`` to ``acc`` and show the running rate."""
    if timer.end_therm():
        bar.set_description("sample")
    acc.add(values, [i for i, u in enumerate(updates) if u > n_therm])
    bar.set_postfix(acc=f"{acc.total / acc.count:.3f}", refresh=False)


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
    pos, pending, acc = start, _Pending(), _Acceptance()
    timer = _Timer(thermalised=pos.update >= schedule.n_therm)
    bar = _progress_bar(schedule, pos, progress, thermalised=timer.therm is not None)

    def flush() -> None:
        nonlocal pos
        pos = replace(pos, n_stored=pos.n_stored + pending.write(writer))
        if on_block is not None:
            on_block(state, pos, timer.spent())

    interrupted = False
    try:
        while pos.update < schedule.n_updates:
            n = _rows_until_flush(pos.update, schedule, len(pending))
            state, info, x_rows, logp_rows = _advance(kernel, state, generator, n)
            updates = range(pos.update + 1, pos.update + 1 + x_rows.shape[0])
            pos = replace(pos, update=updates[-1])
            if pos.update > schedule.n_therm:
                _count_sampled(acc, getattr(info, rate), updates, schedule.n_therm, timer, bar)
            stored = [i for i, u in enumerate(updates) if schedule.stores(u)]
            if stored:
                pending.add(_records(x_rows, logp_rows, info, stored, measure, field_dtype),
                            [updates[i] for i in stored])
                if len(pending) >= schedule.block:
                    flush()
            bar.update(len(updates))
            if stop_requested():
                interrupted = pos.update < schedule.n_updates
                break
        flush()
    finally:
        bar.close()
    return _result(state, pos, start, timer, (acc.total, acc.count), interrupted)

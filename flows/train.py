"""Reverse-KL training of a flow against a lattice action: the one training loop, alone or data-parallel.

Loss (Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515): for a batch x_i = f(z_i), z_i ~ r,

    L = (1/N) Σ_i [log q(x_i) + S(x_i)]  =  KL(q ‖ p) − log Z,

minimised with Adam; the gradient estimator (``train.estimator``: reparam, path, reinforce) is one of
``flows.estimators``. Per step we record the loss, the batch ESS (Σw)²/(N Σw²) with log w = −S − log q,
and the independence-Metropolis acceptance estimate (``flows.validation``). A step whose loss or
gradient is not finite is skipped (weights and optimizer untouched) and counted. Every ``eval_every``
steps the ESS of a fixed validation set is measured and the best flow kept; training ends with the best
flow in place (``flows.validation.BestFlow``). Checkpoints hold everything needed to continue
bit-for-bit. A data-parallel job runs this same loop with a :class:`Collective` that all-reduces the
gradients and agrees on stopping (``mcmc.distributed``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flows.checkpoint import CHECKPOINT_FORMAT, flow_config_dict, theory_params
from flows.collective import Collective
from flows.config import MappingConfig, check_choice
from flows.estimators import ESTIMATORS, estimator_backward
from flows.model import Flow
from flows.validation import BestFlow, acceptance_estimate, ess_fraction, validate

METRICS = ("loss", "ess", "acceptance", "lr", "batch_size", "grad_norm", "seconds", "cpu_seconds")


@dataclass(frozen=True)
class TrainConfig(MappingConfig):
    """Training hyper-parameters (the defaults are the tuned φ⁴ L = 8 choice, see the benchmark card
    ``runs/bench/phi4_flow_L8.yaml``).

    steps: optimizer steps. batch_size → batch_size_max: the batch doubles at equal fractions of the
    run until it reaches batch_size_max (None, or not above batch_size: constant). lr: peak Adam
    learning rate, reached after warmup_steps of linear warm-up, then a cosine decay to
    lr·lr_final_factor at the end (schedule "cosine") or constant ("constant"). grad_clip: max global
    gradient norm (None: off). max_seconds: wall-clock budget (None: none). time_schedule: let the
    schedules follow the clock when it runs ahead of the steps (:func:`schedule_progress`); runs are
    bit-for-bit reproducible while the steps lead, e.g. always when max_seconds is None.
    checkpoint_every: steps between checkpoints (0: only at the end). log_every: steps between
    progress-bar updates. init_from: a flow checkpoint of the same architecture whose weights start
    the training (:func:`warm_start`), e.g. one trained on a smaller lattice or at a nearby coupling:
    the conditioners are translation-equivariant convolutions, so their weights do not depend on the
    lattice size, and the local physics they learned carries over. clock: what ``max_seconds`` and the
    time schedule count, "wall" seconds or the process's "cpu" seconds (all its threads), which other
    jobs on a shared machine do not eat into. estimator: the KL gradient estimator, one of
    ``flows.estimators.ESTIMATORS``. eval_every: steps between validations of ``eval_batch`` fixed
    proposals drawn with seed ``eval_seed`` (0: none; the last weights are kept); with validation the
    flow with the best validation ESS, the untrained start included, is the one training returns.
    stages: a curriculum, a list of mappings each overriding theory keys (shape, lam, m2, beta) and
    training keys for one stage, run in order with the weights carried over (``mcmc`` runs them;
    ``train_flow`` trains one stage).
    """

    steps: int = 1000
    batch_size: int = 64
    batch_size_max: int | None = None
    lr: float = 4e-3
    lr_final_factor: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    grad_clip: float | None = 10.0
    max_seconds: float | None = None
    time_schedule: bool = True
    checkpoint_every: int = 0
    log_every: int = 10
    init_from: str | None = None
    clock: str = "wall"
    estimator: str = "reparam"
    eval_every: int = 0
    eval_batch: int = 512
    eval_seed: int = 8191
    stages: tuple[dict[str, Any], ...] | None = None

    _section = "train"

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"train.clock = {self.clock!r}: expected 'wall' or 'cpu'")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train.schedule = {self.schedule!r}: expected 'cosine' or 'constant'")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"train.steps = {self.steps}, train.batch_size = {self.batch_size}: invalid")
        check_choice("estimator", self.estimator, ESTIMATORS, section="train")
        if self.eval_every < 0 or self.eval_batch < 2:
            raise ValueError(f"train.eval_every = {self.eval_every}, train.eval_batch = {self.eval_batch}: "
                             "expected eval_every >= 0 and eval_batch >= 2")
        if self.stages is not None:
            object.__setattr__(self, "stages", tuple(dict(s) for s in self.stages))

    def spent(self, wall_seconds: float, cpu_seconds: float) -> float:
        """The seconds that ``max_seconds`` and the time schedule count, on this config's ``clock``."""
        return cpu_seconds if self.clock == "cpu" else wall_seconds


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_flow`. ``metrics[name]`` is a float64 array, one entry per step done
    (resumed runs include the steps before the checkpoint); names are ``METRICS``. ``seconds`` is the
    cumulative training time; ``stopped_by`` is "steps", "time" or "signal". ``validation[key]`` holds one
    entry per validation (keys ``flows.validation.VALIDATION_KEYS``; empty without validation);
    ``best_step`` is the step whose weights the flow holds (``steps_done`` without validation)."""

    metrics: dict[str, np.ndarray]
    n_skipped: int
    seconds: float
    steps_done: int
    stopped_by: str
    validation: dict[str, np.ndarray] = field(default_factory=dict)
    best_step: int = -1

    @property
    def cpu_seconds(self) -> float:
        """Cumulative CPU seconds of the training process (all its threads): the cost of training,
        insensitive to other jobs sharing the machine (``seconds`` is wall-clock)."""
        return last_cpu_seconds(self.metrics, default=0.0)


def last_cpu_seconds(metrics: Mapping[str, Any], default: float = math.nan) -> float:
    """The cumulative training CPU seconds at the last step of a metric history (``default`` when it
    holds none, e.g. a checkpoint older than CPU-time records)."""
    cpu = metrics.get("cpu_seconds")
    return float(cpu[-1]) if cpu is not None and len(cpu) else default


def schedule_progress(config: TrainConfig, step: int, seconds: float = 0.0) -> float:
    """Fraction of the run done before (0-based) ``step``: step/steps, or, with ``time_schedule`` and a
    ``max_seconds`` budget, max(step/steps, seconds/max_seconds), so that a slow machine still anneals."""
    frac = step / max(config.steps, 1)
    if config.time_schedule and config.max_seconds is not None:
        frac = max(frac, seconds / config.max_seconds)
    return min(frac, 1.0)


def learning_rate(config: TrainConfig, step: int, seconds: float = 0.0) -> float:
    """LR at (0-based) ``step`` after ``seconds`` of training: linear warm-up over ``warmup_steps`` to
    ``lr``, then constant or a cosine decay to ``lr·lr_final_factor`` over the rest of the run
    (as measured by :func:`schedule_progress`)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    start = config.warmup_steps / max(config.steps, 1)
    frac = min(max((schedule_progress(config, step, seconds) - start) / max(1.0 - start, 1e-12), 0.0), 1.0)
    floor = config.lr * config.lr_final_factor
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def batch_size(config: TrainConfig, step: int, seconds: float = 0.0) -> int:
    """Batch at ``step``: ``batch_size``·2^j, doubling at equal fractions of the run (as measured by
    :func:`schedule_progress`), up to ``batch_size_max``."""
    if config.batch_size_max is None or config.batch_size_max <= config.batch_size:
        return config.batch_size
    n_doublings = math.ceil(math.log2(config.batch_size_max / config.batch_size))
    stage = min(int(schedule_progress(config, step, seconds) * (n_doublings + 1)), n_doublings)
    return min(config.batch_size * 2**stage, config.batch_size_max)


def restore_history(saved: Mapping[str, Any]) -> dict[str, list[float]]:
    """The metric history of a checkpoint as lists; a metric it predates reads as NaN."""
    n = int(saved["step"])
    return {k: saved["metrics"][k].tolist() if k in saved["metrics"] else [math.nan] * n for k in METRICS}


def cpu_clock(history: Mapping[str, list[float]]) -> Callable[[], float]:
    """A clock of cumulative training CPU seconds that continues from ``history``'s last entry."""
    done = [c for c in history.get("cpu_seconds", []) if math.isfinite(c)]
    before, start = (done[-1] if done else 0.0), time.process_time()
    return lambda: before + time.process_time() - start


@dataclass
class _Run:
    """The mutable state of one training run (what a checkpoint stores besides weights and optimizer)."""

    step: int = 0
    n_skipped: int = 0
    seconds_before: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRICS})
    best: BestFlow = field(default_factory=BestFlow)


def checkpoint_payload(
    flow: Flow,
    theory: Any,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    run: _Run,
    seconds: float,
) -> dict[str, Any]:
    """Everything a bit-for-bit resume needs, as tensors and plain containers (``weights_only`` loadable):
    ``model`` (the weights for sampling: the best so far under validation, else the current ones),
    ``current`` (the weights training continues from), optimizer, step (the LR and batch schedules are
    functions of step and seconds), generator state, metric and validation history, skip count,
    cumulative seconds, and the theory and configs it belongs to."""
    current = flow.state_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "theory": theory_params(theory),
        "flow_config": flow_config_dict(flow),
        "train_config": asdict(config),
        "model": run.best.state if run.best.state is not None else current,
        "current": current,
        "best": run.best.to_payload(),
        "optimizer": optimizer.state_dict(),
        "step": run.step,
        "generator": generator.get_state(),
        "metrics": {k: torch.tensor(v, dtype=torch.float64) for k, v in run.history.items()},
        "n_skipped": run.n_skipped,
        "seconds": seconds,
    }


def adam(flow: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam over ``flow``'s parameters, torch's default implementation (multi-tensor ``foreach`` on CUDA).
    Not the fused kernel: it refuses parameters whose memory format changed after its state was made
    (``accel.channels_last`` on a resumed optimizer), where ``foreach`` falls back per tensor."""
    return torch.optim.Adam(flow.parameters(), lr=lr)


def _to_host(logw: torch.Tensor, norm: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """log w ``(n,)`` as a float64 CPU tensor and the gradient norm as a float, in one device-to-host
    copy (one synchronisation per step on a GPU); the values are exact (float32 → float64)."""
    if norm is None:
        return logw.detach().to("cpu", torch.float64), 0.0
    wide = [logw.detach().to(torch.float64).reshape(-1), norm.detach().to(torch.float64).reshape(1)]
    both = torch.cat(wide).to("cpu")
    return both[:-1], float(both[-1])


def _train_step(
    flow: Flow,
    theory: Any,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    seconds: float,
    collective: Collective,
) -> tuple[dict[str, float], bool]:
    """One Adam step on a fresh batch (this rank's share of it); returns the step's metrics (identical on
    every rank) and whether it was skipped."""
    lr, n = learning_rate(config, step, seconds), batch_size(config, step, seconds)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    backward = estimator_backward(config.estimator)
    gather = collective.gather
    logw_device = backward(flow, theory, collective.share(n), n, generator, gather)
    params = [p for p in flow.parameters() if p.grad is not None]
    collective.reduce_gradients(params)
    clip = config.grad_clip if config.grad_clip is not None else math.inf
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if params else None
    logw, grad_norm = _to_host(logw_device, norm)
    logw = gather(logw)
    loss = float(-logw.mean())
    metrics = {"loss": loss, "ess": ess_fraction(logw), "acceptance": acceptance_estimate(logw), "lr": lr,
               "batch_size": float(n), "grad_norm": grad_norm}
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        return metrics, True
    optimizer.step()
    return metrics, False


def _resume(saved: dict[str, Any], flow: Flow, optimizer: torch.optim.Optimizer, generator: torch.Generator,
            collective: Collective) -> _Run:
    """Restore weights, optimizer and generator from ``saved``; the run state it holds."""
    flow.load_state_dict(saved.get("current", saved["model"]))
    optimizer.load_state_dict(saved["optimizer"])
    collective.restore_generator(saved, generator)
    return _Run(int(saved["step"]), int(saved["n_skipped"]), float(saved["seconds"]), restore_history(saved),
                BestFlow.from_payload(saved.get("best")))


def _bar_position(config: TrainConfig, step: int, seconds: float) -> float:
    """Where the training bar stands: ``step``, or under a ``max_seconds`` budget the percentage of the
    run done (:func:`schedule_progress`)."""
    return step if config.max_seconds is None else 100.0 * schedule_progress(config, step, seconds)


def _progress_bar(config: TrainConfig, step: int, seconds: float, enabled: bool) -> Any:
    """The training bar: steps out of ``steps``, or, under a ``max_seconds`` budget, the percentage of
    the run done, so that its ETA is the budget's and not 100000 steps'."""
    if config.max_seconds is None:
        return tqdm(total=config.steps, initial=step, disable=not enabled, desc="train flow",
                    dynamic_ncols=True)
    return tqdm(total=100.0, initial=_bar_position(config, step, seconds), disable=not enabled,
                desc="train flow", unit="%", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/100% [{elapsed}<{remaining}{postfix}]")


def _show(bar: Any, run: _Run, metrics: dict[str, float], config: TrainConfig, seconds: float) -> None:
    bar.update(_bar_position(config, run.step, seconds) - bar.n)
    if not bar.disable and run.step % 10 == 0:
        best = f"{run.best.ess:.3f}@{run.best.step}" if run.best.state is not None else "-"
        bar.set_postfix(step=run.step, loss=f"{metrics['loss']:.3f}", ess=f"{metrics['ess']:.3f}",
                        acc=f"{metrics['acceptance']:.3f}", val=best, skipped=run.n_skipped)


class _Session:
    """One call of :func:`train_flow`: its objects, clocks and the loop over steps."""

    def __init__(self, flow: Flow, theory: Any, config: TrainConfig, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, collective: Collective, run: _Run,
                 tail_index: Callable[[np.ndarray], float] | None) -> None:
        self.flow, self.theory, self.config, self.optimizer = flow, theory, config, optimizer
        self.generator, self.collective, self.run, self.tail_index = generator, collective, run, tail_index
        self.start, self.cpu_seconds = time.perf_counter(), cpu_clock(run.history)

    def elapsed(self) -> float:
        return self.run.seconds_before + time.perf_counter() - self.start

    def payload(self, seconds: float | None = None) -> dict[str, Any]:
        seconds = self.elapsed() if seconds is None else seconds
        return checkpoint_payload(self.flow, self.theory, self.config, self.optimizer, self.generator,
                                  self.run, seconds)

    def validate(self) -> None:
        """Validate unless off or already done at this step; keep the flow if it is the best."""
        done, config = self.run.best.history["step"], self.config
        if config.eval_every and (not done or done[-1] != self.run.step):
            record = validate(self.flow, self.theory, config.eval_batch, config.eval_seed, self.tail_index)
            record.update(step=self.run.step, cpu_seconds=self.cpu_seconds())
            self.run.best.offer(self.flow, record)

    def loop(self, path: Path | None, progress: bool, stop: Callable[[], bool]) -> str:
        """Steps until the step count, the time budget or a stop request ends them; returns which."""
        run, config = self.run, self.config
        bar = _progress_bar(config, run.step, config.spent(self.elapsed(), self.cpu_seconds()), progress)
        stopped_by = "steps"
        while run.step < config.steps:
            now = config.spent(self.elapsed(), self.cpu_seconds())
            out_of_time, stop_now, now = self.collective.agree(
                config.max_seconds is not None and now >= config.max_seconds, stop(), now)
            if out_of_time or stop_now:
                stopped_by = "signal" if stop_now else "time"
                break
            metrics, skipped = _train_step(self.flow, self.theory, config, self.optimizer, self.generator,
                                           run.step, now, self.collective)
            run.n_skipped, run.step = run.n_skipped + int(skipped), run.step + 1
            metrics["seconds"], metrics["cpu_seconds"] = self.elapsed(), self.cpu_seconds()
            for k in METRICS:
                run.history[k].append(metrics[k])
            if config.eval_every and run.step % config.eval_every == 0:
                self.validate()
            _show(bar, run, metrics, config, config.spent(metrics["seconds"], metrics["cpu_seconds"]))
            if config.checkpoint_every and run.step % config.checkpoint_every == 0:
                self.collective.save(path, self.payload, self.generator)
        bar.close()
        return stopped_by


def train_flow(
    flow: Flow,
    theory: Any,
    config: TrainConfig,
    generator: torch.Generator,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop: Callable[[], bool] = lambda: False,
    *,
    collective: Collective | None = None,
    tail_index: Callable[[np.ndarray], float] | None = None,
) -> TrainResult:
    """Train ``flow`` in place by reverse KL against ``theory.action`` for ``config.steps`` steps.

    Training ends early when the ``config.max_seconds`` budget is spent (``stopped_by = "time"``) or
    when ``stop()`` turns true (``"signal"``, e.g. SIGTERM from a batch system); the checkpoint is
    written either way, so a resumed run continues from there. With ``config.eval_every`` the flow ends
    holding the weights of its best validation (``tail_index`` adds e.g. Pareto k̂ to each validation).

    ``generator`` (on the flow's device) drives every training draw. With ``resume`` and an existing
    ``checkpoint_path``, model, optimizer, step, metrics and generator state are restored first
    (a checkpoint for another theory or architecture raises ``CheckpointMismatch``), so the
    continued run equals the uninterrupted one bit-for-bit. A checkpoint is written every
    ``config.checkpoint_every`` steps and at the end when ``checkpoint_path`` is given.
    ``collective`` makes this a data-parallel step over ranks (``mcmc.distributed``); then ``generator``
    is this rank's stream and ``config.batch_size`` the total batch.
    """
    collective = collective or Collective()
    optimizer = adam(flow, config.lr)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    saved = collective.load(path, theory, flow) if resume else None
    run = _resume(saved, flow, optimizer, generator, collective) if saved is not None else _Run()
    session = _Session(flow, theory, config, optimizer, generator, collective, run, tail_index)
    flow.train()
    session.validate()  # the start (a fresh run) competes too
    stopped_by = session.loop(path, progress, stop)
    session.validate()  # the end
    seconds = session.elapsed()
    collective.save(path, lambda: session.payload(seconds), generator)
    if run.best.state is not None:
        flow.load_state_dict(run.best.state)
    flow.eval()
    collective.finish(flow)
    return TrainResult({k: np.asarray(v, dtype=np.float64) for k, v in run.history.items()}, run.n_skipped,
                       seconds, run.step, stopped_by,
                       {k: np.asarray(v, dtype=np.float64) for k, v in run.best.history.items()},
                       run.best.step if run.best.state is not None else run.step)

"""Reverse-KL training of a flow against a lattice action, with exact resume.

Loss (Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515): for a batch x_i = f(z_i), z_i ~ r,

    L = (1/N) Σ_i [log q(x_i) + S(x_i)]  =  KL(q ‖ p) − log Z,

minimised with Adam on reparameterised samples. Per step we record the loss, the batch ESS
(Σw)²/(N Σw²) with log w = −S − log q, and the independence-Metropolis acceptance estimate of
:func:`acceptance_estimate`. A step whose loss or gradient is not finite is skipped (weights and
optimizer untouched) and counted. Checkpoints hold everything needed to continue bit-for-bit.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flows.config import MappingConfig
from flows.model import Flow, FlowConfig, build_flow

CHECKPOINT_FORMAT = "latflow.flow_checkpoint/1"
METRICS = ("loss", "ess", "acceptance", "lr", "batch_size", "grad_norm", "seconds", "cpu_seconds")


class CheckpointMismatch(ValueError):
    """A checkpoint was made for another theory or flow architecture than the one asked for."""


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
    jobs on a shared machine do not eat into.
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

    _section = "train"

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"train.clock = {self.clock!r}: expected 'wall' or 'cpu'")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train.schedule = {self.schedule!r}: expected 'cosine' or 'constant'")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"train.steps = {self.steps}, train.batch_size = {self.batch_size}: invalid")

    def spent(self, wall_seconds: float, cpu_seconds: float) -> float:
        """The seconds that ``max_seconds`` and the time schedule count, on this config's ``clock``."""
        return cpu_seconds if self.clock == "cpu" else wall_seconds


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_flow`. ``metrics[name]`` is a float64 array, one entry per step done
    (resumed runs include the steps before the checkpoint); names are ``METRICS``. ``seconds`` is the
    cumulative training time; ``stopped_by`` is "steps" or "time"."""

    metrics: dict[str, np.ndarray]
    n_skipped: int
    seconds: float
    steps_done: int
    stopped_by: str

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


def ess_fraction(logw: torch.Tensor) -> float:
    """Reweighting ESS per sample, (Σw)²/(N Σw²), from ``logw (N,)`` (computed in log space)."""
    logw = logw.to(torch.float64)
    if not torch.isfinite(logw).all():
        return float("nan")
    return math.exp(2 * torch.logsumexp(logw, 0).item() - torch.logsumexp(2 * logw, 0).item()) / logw.numel()


def acceptance_estimate(logw: torch.Tensor) -> float:
    """Stationary acceptance of independence Metropolis, E_{x~p, x'~q}[min(1, w'/w)], from one batch.

    With p ∝ w q, the batch estimate is Σ_{i≠j} min(w_i, w_j) / ((N−1) Σ_i w_i); sorting w ascending
    turns the pair sum into 2 Σ_k w_(k) (N − k), k = 1..N, so it costs O(N log N).
    """
    logw = logw.to(torch.float64)
    n = logw.numel()
    if n < 2 or not torch.isfinite(logw).all():
        return float("nan")
    w = torch.exp(logw - logw.max()).sort().values
    ranks = torch.arange(n - 1, -1, -1, dtype=torch.float64, device=w.device)
    return (2.0 * (w * ranks).sum() / ((n - 1) * w.sum())).item()


def _theory_params(theory: Any) -> dict[str, Any]:
    return theory.params() if hasattr(theory, "params") else {"repr": repr(theory)}


def _flow_config_dict(flow: Flow) -> dict[str, Any]:
    return flow.config.to_dict() if flow.config is not None else {}


def _check_match(saved: Mapping[str, Any], theory: Any, flow_config: Mapping[str, Any], path: Path) -> None:
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path} is not a latflow flow checkpoint (format {saved.get('format')!r})")
    want = _theory_params(theory)
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
    if saved["flow_config"] != _flow_config_dict(flow):
        raise CheckpointMismatch(
            f"train.init_from: {path} holds flow {saved['flow_config']}, not {_flow_config_dict(flow)}"
        )
    try:
        flow.load_state_dict(saved["model"])
    except RuntimeError as exc:  # e.g. the φ⁴ Fourier layer, whose weights depend on the lattice size
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointMismatch(f"train.init_from: {path} does not fit this flow ({first})") from None
    return saved["theory"]


def load_flow(
    path: str | os.PathLike,
    theory: Any,
    flow_config: FlowConfig | Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Flow:
    """The trained flow stored at ``path``, rebuilt from its saved architecture (checked against
    ``flow_config`` when given) and checked against ``theory``."""
    if isinstance(flow_config, FlowConfig):
        flow_config = flow_config.to_dict()
    elif flow_config is not None:
        flow_config = FlowConfig.from_mapping(flow_config).to_dict()
    saved = load_checkpoint(path, theory, flow_config)
    flow = build_flow(theory, saved["flow_config"], dtype=dtype, device=device)
    flow.load_state_dict(saved["model"])
    return flow


def restore_history(saved: Mapping[str, Any]) -> dict[str, list[float]]:
    """The metric history of a checkpoint as lists; a metric it predates reads as NaN."""
    n = int(saved["step"])
    return {k: saved["metrics"][k].tolist() if k in saved["metrics"] else [math.nan] * n for k in METRICS}


def cpu_clock(history: Mapping[str, list[float]]) -> Callable[[], float]:
    """A clock of cumulative training CPU seconds that continues from ``history``'s last entry."""
    done = [c for c in history.get("cpu_seconds", []) if math.isfinite(c)]
    before, start = (done[-1] if done else 0.0), time.process_time()
    return lambda: before + time.process_time() - start


def checkpoint_payload(
    flow: Flow,
    theory: Any,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    history: dict[str, list[float]],
    n_skipped: int,
    seconds: float,
) -> dict[str, Any]:
    """Everything a bit-for-bit resume needs, as tensors and plain containers (``weights_only`` loadable):
    model, optimizer, step (the LR and batch schedules are functions of step and seconds), generator
    state, metric history, skip count, cumulative seconds, and the theory and configs it belongs to."""
    train_config = asdict(config)
    return {
        "format": CHECKPOINT_FORMAT,
        "theory": _theory_params(theory),
        "flow_config": _flow_config_dict(flow),
        "train_config": train_config,
        "model": flow.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"step": step, "seconds": seconds},
        "step": step,
        "generator": generator.get_state(),
        "metrics": {k: torch.tensor(v, dtype=torch.float64) for k, v in history.items()},
        "n_skipped": n_skipped,
        "seconds": seconds,
    }


def _train_step(
    flow: Flow,
    theory: Any,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    seconds: float,
) -> tuple[dict[str, float], bool]:
    """One Adam step on a fresh batch; returns the step's metrics and whether it was skipped."""
    lr, n = learning_rate(config, step, seconds), batch_size(config, step, seconds)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    x, logq = flow.forward_with_logq(n, generator)
    action = theory.action(x)
    loss = (logq + action).mean()
    logw = (-action - logq).detach()
    metrics = {
        "loss": loss.item(),
        "ess": ess_fraction(logw),
        "acceptance": acceptance_estimate(logw),
        "lr": lr,
        "batch_size": float(n),
        "grad_norm": float("nan"),
    }
    if not math.isfinite(metrics["loss"]):
        return metrics, True
    loss.backward()
    params = [p for p in flow.parameters() if p.grad is not None]
    clip = config.grad_clip if config.grad_clip is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item() if params else 0.0
    metrics["grad_norm"] = grad_norm
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return metrics, True
    optimizer.step()
    return metrics, False


def train_flow(
    flow: Flow,
    theory: Any,
    config: TrainConfig,
    generator: torch.Generator,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train ``flow`` in place by reverse KL against ``theory.action`` for ``config.steps`` steps.

    Training ends early when the ``config.max_seconds`` budget is spent (``stopped_by = "time"``) or
    when ``stop()`` turns true (``"signal"``, e.g. SIGTERM from a batch system); the checkpoint is
    written either way, so a resumed run continues from there.

    ``generator`` (on the flow's device) drives every draw. With ``resume`` and an existing
    ``checkpoint_path``, model, optimizer, step, metrics and generator state are restored first
    (a checkpoint for another theory or architecture raises :class:`CheckpointMismatch`), so the
    continued run equals the uninterrupted one bit-for-bit. A checkpoint is written every
    ``config.checkpoint_every`` steps and at the end when ``checkpoint_path`` is given.
    """
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    history: dict[str, list[float]] = {k: [] for k in METRICS}
    step, n_skipped, seconds_before = 0, 0, 0.0
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        saved = load_checkpoint(checkpoint_path, theory, _flow_config_dict(flow))
        flow.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        step, n_skipped, seconds_before = saved["step"], saved["n_skipped"], saved["seconds"]
        history = restore_history(saved)

    flow.train()
    start, cpu_seconds = time.perf_counter(), cpu_clock(history)
    stopped_by = "steps"
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train flow", dynamic_ncols=True)

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - start

    while step < config.steps:
        budget = config.spent(elapsed(), cpu_seconds())
        if config.max_seconds is not None and budget >= config.max_seconds:
            stopped_by = "time"
            break
        if stop():
            stopped_by = "signal"
            break
        metrics, skipped = _train_step(flow, theory, config, optimizer, generator, step, budget)
        n_skipped += int(skipped)
        step += 1
        metrics["seconds"], metrics["cpu_seconds"] = elapsed(), cpu_seconds()
        for k in METRICS:
            history[k].append(metrics[k])
        bar.update(1)
        if progress and step % config.log_every == 0:
            bar.set_postfix(
                loss=f"{metrics['loss']:.3f}",
                ess=f"{metrics['ess']:.3f}",
                acc=f"{metrics['acceptance']:.3f}",
                skipped=n_skipped,
            )
        if checkpoint_path is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
            save_checkpoint(
                checkpoint_path,
                checkpoint_payload(
                    flow, theory, config, optimizer, generator, step, history, n_skipped, elapsed()
                ),
            )
    bar.close()
    flow.eval()
    seconds = elapsed()
    if checkpoint_path is not None:
        save_checkpoint(
            checkpoint_path,
            checkpoint_payload(flow, theory, config, optimizer, generator, step, history, n_skipped, seconds),
        )
    return TrainResult(
        {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}, n_skipped, seconds, step, stopped_by
    )

"""Reverse-KL training: metrics, schedules, NaN guard, checkpoint refusal, bit-for-bit resume."""

import math

import numpy as np
import pytest
import torch

from flows.checkpoint import CheckpointMismatch, load_checkpoint
from flows.model import build_flow
from flows.registry import load_flow
from flows.train import METRICS, TrainConfig, _progress_bar, batch_size, learning_rate, train_flow
from flows.validation import acceptance_estimate, ess_fraction
from lattice.scalar import Phi4

THEORY = Phi4((4, 4), -4.0, 8.0)
FLOW = {"coupling": "spline", "n_layers": 2, "hidden": [4], "bins": 4}


class _Faulty(Phi4):
    """φ⁴ whose action returns NaN (or raises) on chosen calls, counting calls from 1."""

    def __init__(self, *args, nan_calls=(), raise_call=None):
        super().__init__(*args)
        object.__setattr__(self, "calls", 0)
        object.__setattr__(self, "nan_calls", set(nan_calls))
        object.__setattr__(self, "raise_call", raise_call)

    def action(self, phi):
        object.__setattr__(self, "calls", self.calls + 1)
        if self.calls == self.raise_call:
            raise KeyboardInterrupt("simulated kill")
        s = super().action(phi)
        return s * float("nan") if self.calls in self.nan_calls else s


def _flow(seed=0):
    return build_flow(THEORY, FLOW, generator=torch.Generator().manual_seed(seed))


def _params(flow):
    return [p.detach().clone() for p in flow.parameters()]


def test_ess_and_acceptance_estimates():
    g = torch.Generator().manual_seed(0)
    logw = 0.7 * torch.randn(300, generator=g, dtype=torch.float64)
    w = logw.exp()
    assert math.isclose(ess_fraction(logw), (w.sum() ** 2 / (300 * (w * w).sum())).item(), rel_tol=1e-12)
    pair_min = torch.minimum(w[:, None], w[None, :])
    brute = (pair_min.sum() - w.sum()) / (299 * w.sum())
    assert math.isclose(acceptance_estimate(logw), brute.item(), rel_tol=1e-12)
    assert acceptance_estimate(torch.full((50,), 3.0)) == pytest.approx(1.0, abs=1e-14)
    assert acceptance_estimate(logw + 1e3) == pytest.approx(brute.item(), rel=1e-12)  # no overflow


def test_schedules():
    cfg = TrainConfig(
        steps=100, lr=1e-2, warmup_steps=10, lr_final_factor=0.1, batch_size=16, batch_size_max=64
    )
    lrs = [learning_rate(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-2) and lrs[-1] > 1e-3
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    sizes = [batch_size(cfg, s) for s in range(100)]
    assert sizes[0] == 16 and sizes[-1] == 64 and sorted(sizes) == sizes and set(sizes) == {16, 32, 64}
    assert learning_rate(TrainConfig(schedule="constant", lr=3e-3), 500) == 3e-3
    # with a time budget the schedule follows the clock when it runs ahead of the steps
    timed = TrainConfig(
        steps=100, lr=1e-2, lr_final_factor=0.1, max_seconds=10.0, batch_size=16, batch_size_max=64
    )
    assert learning_rate(timed, 20, seconds=0.5) == learning_rate(timed, 20)  # steps lead
    assert learning_rate(timed, 20, seconds=10.0) == pytest.approx(1e-3)  # the clock leads
    assert batch_size(timed, 20, seconds=9.9) == 64 and batch_size(timed, 20, seconds=0.1) == 16
    untimed = TrainConfig(steps=100, lr=1e-2, max_seconds=10.0, time_schedule=False)
    assert learning_rate(untimed, 10, seconds=10.0) == learning_rate(untimed, 10)
    with pytest.raises(ValueError, match="unknown train key"):
        TrainConfig.from_mapping({"stepz": 3})


def test_training_reduces_loss_and_records_metrics():
    flow = _flow()
    res = train_flow(
        flow,
        THEORY,
        TrainConfig(steps=60, batch_size=64, lr=5e-3),
        torch.Generator().manual_seed(1),
        progress=False,
    )
    assert res.steps_done == 60 and res.n_skipped == 0 and res.stopped_by == "steps"
    assert set(res.metrics) == set(METRICS) and all(len(v) == 60 for v in res.metrics.values())
    m = res.metrics
    assert m["loss"][-10:].mean() < m["loss"][:10].mean() - 0.5
    assert m["ess"][-10:].mean() > m["ess"][:10].mean()
    assert np.all((m["acceptance"] > 0) & (m["acceptance"] <= 1))


def test_nan_step_is_skipped_and_weights_stay_clean():
    gen_seed = 2
    reference = _flow()
    train_flow(
        reference,
        THEORY,
        TrainConfig(steps=3, batch_size=32, schedule="constant"),
        torch.Generator().manual_seed(gen_seed),
        progress=False,
    )
    faulty = _Faulty((4, 4), -4.0, 8.0, nan_calls={4})
    flow = _flow()
    res = train_flow(
        flow,
        faulty,
        TrainConfig(steps=4, batch_size=32, schedule="constant"),
        torch.Generator().manual_seed(gen_seed),
        progress=False,
    )
    assert res.n_skipped == 1 and math.isnan(res.metrics["loss"][3])
    for a, b in zip(_params(flow), _params(reference), strict=True):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)  # the NaN step changed nothing


def test_time_budget_stops_training():
    res = train_flow(
        _flow(),
        THEORY,
        TrainConfig(steps=10**6, batch_size=8, max_seconds=0.5),
        torch.Generator().manual_seed(3),
        progress=False,
    )
    assert res.stopped_by == "time" and 0 < res.steps_done < 10**6 and res.seconds < 5


def test_cpu_clock_budget():
    """``clock="cpu"``: the budget counts the process's CPU seconds (a sleeping process spends none)."""
    import time

    def sleepy_action(x):
        time.sleep(0.1)
        return THEORY.action(x)

    class Sleepy:
        def __getattr__(self, name):
            return sleepy_action if name == "action" else getattr(THEORY, name)

    res = train_flow(_flow(), Sleepy(), TrainConfig(steps=10, batch_size=8, max_seconds=0.5, clock="cpu"),
                     torch.Generator().manual_seed(3), progress=False)
    assert res.stopped_by == "steps" and res.seconds > 0.9 and res.cpu_seconds < res.seconds
    with pytest.raises(ValueError, match="train.clock"):
        TrainConfig(clock="gpu")


def test_stop_request_checkpoints_and_resume_finishes_the_same_run(tmp_path):
    """A stop request (SIGTERM in ``latflow run``) ends training with a checkpoint; resuming it gives
    the weights of the uninterrupted run."""
    path, config = tmp_path / "flow.pt", TrainConfig(steps=12, batch_size=8)
    calls = iter(range(10**6))
    stopped = train_flow(_flow(), THEORY, config, torch.Generator().manual_seed(5), checkpoint_path=path,
                         progress=False, stop=lambda: next(calls) >= 5)
    assert stopped.stopped_by == "signal" and stopped.steps_done == 5
    assert torch.load(path, weights_only=True)["step"] == 5
    resumed_flow, full_flow = _flow(), _flow()
    resumed = train_flow(resumed_flow, THEORY, config, torch.Generator().manual_seed(99),
                         checkpoint_path=path, resume=True, progress=False)
    train_flow(full_flow, THEORY, config, torch.Generator().manual_seed(5), progress=False)
    assert resumed.stopped_by == "steps" and resumed.steps_done == 12
    for a, b in zip(_params(resumed_flow), _params(full_flow), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_for_other_theory_or_flow_is_refused(tmp_path):
    path = tmp_path / "flow.pt"
    train_flow(
        _flow(),
        THEORY,
        TrainConfig(steps=2, batch_size=8),
        torch.Generator().manual_seed(4),
        checkpoint_path=path,
        progress=False,
    )
    assert not (tmp_path / "flow.pt.tmp").exists()
    other = Phi4((4, 4), -3.0, 8.0)
    with pytest.raises(CheckpointMismatch) as exc:
        train_flow(
            build_flow(other, FLOW),
            other,
            TrainConfig(steps=4),
            torch.Generator(),
            checkpoint_path=path,
            resume=True,
            progress=False,
        )
    assert "\n" not in str(exc.value) and "m2" in str(exc.value)
    with pytest.raises(CheckpointMismatch, match="flow"):
        load_flow(path, THEORY, {**FLOW, "n_layers": 4})
    with pytest.raises(CheckpointMismatch):
        load_checkpoint(path, Phi4((8, 8), -4.0, 8.0))
    loaded = load_flow(path, THEORY)
    assert loaded.config.n_layers == 2


def test_resumed_training_is_bit_for_bit(tmp_path):
    cfg = TrainConfig(steps=8, batch_size=8, batch_size_max=16, warmup_steps=2, lr=5e-3, checkpoint_every=3)
    full = _flow()
    res_full = train_flow(
        full, THEORY, cfg, torch.Generator().manual_seed(5), checkpoint_path=tmp_path / "a.pt", progress=False
    )

    path = tmp_path / "b.pt"
    killed = _Faulty((4, 4), -4.0, 8.0, raise_call=5)  # dies in step 5, after the checkpoint at step 3
    with pytest.raises(KeyboardInterrupt):
        train_flow(
            _flow(), killed, cfg, torch.Generator().manual_seed(5), checkpoint_path=path, progress=False
        )
    assert load_checkpoint(path, THEORY)["step"] == 3

    resumed = _flow(seed=99)  # different initial weights and generator: all must come from the checkpoint
    res = train_flow(
        resumed,
        THEORY,
        cfg,
        torch.Generator().manual_seed(123),
        checkpoint_path=path,
        resume=True,
        progress=False,
    )
    assert res.steps_done == 8
    for a, b in zip(_params(resumed), _params(full), strict=True):
        assert torch.equal(a, b)
    for name in METRICS:
        if name not in ("seconds", "cpu_seconds"):  # clocks differ between runs
            np.testing.assert_array_equal(res.metrics[name], res_full.metrics[name])


def test_destructive_learning_rate_hands_over_the_best_flow(tmp_path):
    """Model selection: with lr = 1 training wrecks the flow, yet the flow returned (and stored as the
    checkpoint's ``model``) is the best one validated, never worse than the start."""
    from flows.validation import validate

    config = TrainConfig(steps=30, batch_size=16, lr=1.0, schedule="constant", grad_clip=None,
                         eval_every=5, eval_batch=256)
    trained = _flow()
    good = TrainConfig(steps=60, batch_size=64, lr=5e-3)  # a good start, then the destructive run from it
    train_flow(trained, THEORY, good, torch.Generator().manual_seed(1), progress=False)
    start_ess = validate(trained, THEORY, 256, config.eval_seed)["ess"]
    assert start_ess > 0.2
    res = train_flow(trained, THEORY, config, torch.Generator().manual_seed(3),
                     checkpoint_path=tmp_path / "f.pt", progress=False, tail_index=lambda logw: logw.size)
    val = res.validation
    assert np.all(val["khat"] == 256)  # the tail-index hook sees each validation's log-weights
    assert list(val["step"]) == [0, 5, 10, 15, 20, 25, 30]
    assert val["ess"][0] == pytest.approx(start_ess, rel=1e-12)
    assert val["ess"][-1] < 0.5 * val["ess"][0]  # the learning rate did destroy the flow
    best = int(np.nanargmax(val["ess"]))
    assert res.best_step == val["step"][best]
    final_ess = validate(trained, THEORY, 256, config.eval_seed)["ess"]
    assert final_ess == pytest.approx(val["ess"][best], rel=1e-12)
    stored = load_flow(tmp_path / "f.pt", THEORY)
    for a, b in zip(_params(stored), _params(trained), strict=True):
        assert torch.equal(a, b)


def test_resume_with_validation_is_bit_for_bit(tmp_path):
    cfg = TrainConfig(steps=8, batch_size=8, lr=5e-3, eval_every=2, eval_batch=32)
    full = _flow()
    res_full = train_flow(full, THEORY, cfg, torch.Generator().manual_seed(5), progress=False)
    path = tmp_path / "v.pt"
    calls = iter(range(10**6))
    train_flow(_flow(), THEORY, cfg, torch.Generator().manual_seed(5), checkpoint_path=path, progress=False,
               stop=lambda: next(calls) >= 5)
    resumed = _flow(seed=99)
    res = train_flow(resumed, THEORY, cfg, torch.Generator().manual_seed(1), checkpoint_path=path,
                     resume=True, progress=False)
    for a, b in zip(_params(resumed), _params(full), strict=True):
        assert torch.equal(a, b)
    assert res.best_step == res_full.best_step
    pick = [0, 1, 2, -1]
    np.testing.assert_array_equal(res.validation["ess"][pick], res_full.validation["ess"][pick])


def test_progress_bar_follows_the_time_budget() -> None:
    """Under max_seconds the bar counts the percentage of the run (so its ETA is the budget's), else steps."""
    budget = TrainConfig(steps=100_000, max_seconds=200.0)
    bar = _progress_bar(budget, step=10, seconds=50.0, enabled=False)
    assert (bar.total, bar.n) == (100.0, 25.0)
    steps = _progress_bar(TrainConfig(steps=40), step=10, seconds=50.0, enabled=False)
    assert (steps.total, steps.n) == (40, 10)

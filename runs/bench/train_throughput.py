"""Training steps per CPU second of the φ⁴ flow, and where a step's time goes (torch.profiler).

Usage (from the repository root):
    PYTHONPATH=. .venv/bin/python runs/bench/train_throughput.py --L 8 32 --steps 30 --profile
φ⁴ at m² = −4, λ = 8 with the default flows.model.FlowConfig, float32, batch ``--batch`` (64), the
default TrainConfig except ``--estimator``; one torch thread. Prints steps per CPU second (after 3 warm-up
steps; the best of ``--repeat`` measurements, since on a shared machine other jobs only slow a
measurement down) and, with ``--profile``, the operators with the largest self CPU time over 5 profiled steps.
"""

import argparse
import time

import torch

from flows.model import build_flow
from flows.train import TrainConfig, train_flow
from lattice.scalar import Phi4


def steps_per_cpu_second(L: int, steps: int, batch: int, estimator: str) -> float:
    theory = Phi4((L, L), -4.0, 8.0)
    flow = build_flow(theory, generator=torch.Generator().manual_seed(0))
    extra = {"estimator": estimator} if estimator != "reparam" else {}  # runs on code without estimators too
    config = TrainConfig(steps=3, batch_size=batch, **extra)
    train_flow(flow, theory, config, torch.Generator().manual_seed(1), progress=False)  # warm-up
    config = TrainConfig(steps=steps, batch_size=batch, **extra)
    start = time.process_time()
    train_flow(flow, theory, config, torch.Generator().manual_seed(2), progress=False)
    return steps / (time.process_time() - start)


def profile(L: int, batch: int, estimator: str) -> None:
    theory = Phi4((L, L), -4.0, 8.0)
    flow = build_flow(theory, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=5, batch_size=batch, estimator=estimator)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_flow(flow, theory, config, torch.Generator().manual_seed(1), progress=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--estimator", default="reparam")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="report the best of this many measurements")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for L in args.L:
        rates = [steps_per_cpu_second(L, args.steps, args.batch, args.estimator) for _ in range(args.repeat)]
        rate = max(rates)
        print(f"L={L} batch={args.batch} estimator={args.estimator}: {rate:.2f} steps per CPU second")
        if args.profile:
            profile(L, args.batch, args.estimator)


if __name__ == "__main__":
    main()

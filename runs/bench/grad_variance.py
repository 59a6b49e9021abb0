"""Gradient variance of the KL estimators (reparam, path, reinforce) on a φ⁴ flow.

Usage (from the repository root):
    PYTHONPATH=. .venv/bin/python runs/bench/grad_variance.py --L 8 --pretrain 300 --batches 40 --batch 64
Builds the default φ⁴ flow (flows.model.FlowConfig) at m² = −4, λ = 8, optionally trains it for
``--pretrain`` steps (reparam, default TrainConfig), then draws ``--batches`` independent batches per
estimator and prints, per estimator: tr Cov(ĝ) (the summed per-parameter variance of one batch's
gradient), |E ĝ|², their ratio, and CPU seconds per gradient. One torch thread.
"""

import argparse
import time

import torch

from flows.estimators import ESTIMATORS, estimator_backward
from flows.model import build_flow
from flows.train import TrainConfig, train_flow
from lattice.scalar import Phi4


def gradients(flow, theory, name, n, batches, seed):
    """(batches, P) gradient estimates and the CPU seconds per estimate."""
    generator, out = torch.Generator().manual_seed(seed), []
    start = time.process_time()
    for _ in range(batches):
        flow.zero_grad(set_to_none=False)
        estimator_backward(name)(flow, theory, n, n, generator)
        out.append(torch.cat([p.grad.reshape(-1) for p in flow.parameters()]).double())
    return torch.stack(out), (time.process_time() - start) / batches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--pretrain", type=int, default=300)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    theory = Phi4((args.L, args.L), -4.0, 8.0)
    flow = build_flow(theory, generator=torch.Generator().manual_seed(0))
    if args.pretrain:
        train_flow(flow, theory, TrainConfig(steps=args.pretrain), torch.Generator().manual_seed(1),
                   progress=False)
    flow.train()
    print(f"phi4 L={args.L} pretrain={args.pretrain} batch={args.batch} batches={args.batches}")
    for name in ESTIMATORS:
        g, sec = gradients(flow, theory, name, args.batch, args.batches, args.seed)
        var, mean2 = g.var(0).sum().item(), g.mean(0).pow(2).sum().item()
        print(f"{name:9s} trCov={var:.4g} |mean|^2={mean2:.4g} ratio={var / max(mean2, 1e-300):.3g} "
              f"cpu_s_per_grad={sec:.4f}")


if __name__ == "__main__":
    main()

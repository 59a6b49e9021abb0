"""Cost of exact float64 flow proposals with float64 against float32 conditioners, in one run.

Usage (from the repository root):  PYTHONPATH=. .venv/bin/python runs/bench/flow_sampling_dtype.py
The default φ⁴ flow at L = 8 (briefly trained, so that it is not the identity) samples 5 × 1024
configurations through ``Flow.as_float64()`` and ``Flow.as_float64(conditioner_dtype=torch.float32)``;
prints the CPU milliseconds per 1024 proposals and the largest |log_prob(x) − logq| of each (exactness).
"""

import time

import torch

from flows.model import build_flow
from flows.train import TrainConfig, train_flow
from lattice.scalar import Phi4


def main():
    torch.set_num_threads(1)
    theory = Phi4((8, 8), -4.0, 8.0)
    generator = torch.Generator().manual_seed(0)
    flow = build_flow(theory, {}, generator=generator)
    train_flow(flow, theory, TrainConfig(steps=30), generator, progress=False)
    for conditioner in (torch.float64, torch.float32):
        proposal = flow.as_float64(conditioner)
        g = torch.Generator().manual_seed(1)
        proposal.sample(256, g)
        start = time.process_time()
        for _ in range(5):
            x, logq = proposal.sample(1024, g)
        ms = (time.process_time() - start) / 5 * 1e3
        err = (proposal.log_prob(x) - logq).abs().max().item()
        print(f"conditioners {conditioner}: {ms:.0f} CPU ms per 1024 proposals, "
              f"max |log_prob - logq| {err:.1e}")


if __name__ == "__main__":
    main()

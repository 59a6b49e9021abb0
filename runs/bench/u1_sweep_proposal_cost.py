"""CPU milliseconds per proposal of the 2D U(1) sweep flow (runs/bench/u1_L16 cards' architecture, β = 6).

Usage (from the repository root):
    PYTHONPATH=. .venv/bin/python runs/bench/u1_sweep_proposal_cost.py L BATCH [profile]
float64 proposal flow with float32 conditioners (as sampling uses), one torch thread; the mean of two
batches after one warm-up batch; with a third argument, torch.profiler's top operators of one batch.
"""
import sys
import time

import torch

from flows.u1.flow import build_u1_flow
from lattice.u1 import U1


def main() -> None:
    torch.set_num_threads(1)
    size, batch, profile = int(sys.argv[1]), int(sys.argv[2]), len(sys.argv) > 3
    start = time.process_time()
    config = {"coupling": "spline", "sweep": True, "init": "wilson", "n_layers": 0, "hidden": [4],
              "kernel_size": 3, "bins": 8}
    flow = build_u1_flow(U1((size, size), 6.0), config)
    print("build", round(time.process_time() - start, 2))
    proposal = flow.as_float64(conditioner_dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    proposal.sample(batch, generator)
    start, n = time.process_time(), 2
    for _ in range(n):
        proposal.sample(batch, generator)
    per_proposal = (time.process_time() - start) / (n * batch)
    print(f"L={size}: {per_proposal * 1e3:.2f} ms CPU per proposal (batch {batch})")
    if profile:
        with torch.profiler.profile() as prof:
            proposal.sample(batch, generator)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()

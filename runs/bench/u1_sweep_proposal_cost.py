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

torch.set_num_threads(1)
L = int(sys.argv[1]); B = int(sys.argv[2]); prof = len(sys.argv) > 3
th = U1((L, L), 6.0)
t = time.process_time()
config = {"coupling": "spline", "sweep": True, "init": "wilson", "n_layers": 0, "hidden": [4], "kernel_size": 3,
          "bins": 8}
flow = build_u1_flow(th, config)
print("build", round(time.process_time() - t, 2))
prop = flow.as_float64(conditioner_dtype=torch.float32)
g = torch.Generator().manual_seed(0)
prop.sample(B, g)
t = time.process_time(); n = 2
for _ in range(n): prop.sample(B, g)
print(f"L={L}: {(time.process_time() - t) / (n * B) * 1e3:.2f} ms CPU per proposal (batch {B})")
if prof:
    with torch.profiler.profile() as p:
        prop.sample(B, g)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

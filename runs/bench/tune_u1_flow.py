"""Tune the 2D U(1) gauge-equivariant flow on the CPU: train one configuration, print ESS and acceptance.

Usage (from the repository root):
    PYTHONPATH=. .venv/bin/python runs/bench/tune_u1_flow.py FLOW_JSON TRAIN_JSON
FLOW_JSON holds U1FlowConfig keys; TRAIN_JSON holds TrainConfig keys plus "L" (default 8), "beta"
(default 2.0) and "seed" (default 0). One torch thread. The offset-order comparison quoted in
flows/u1/flow.py is
    ... tune_u1_flow.py '{"offset_order": "decreasing"}' '{"steps": 400, "batch_size": 64, "lr": 4e-3}'
    ... tune_u1_flow.py '{"offset_order": "increasing"}' '{"steps": 400, "batch_size": 64, "lr": 4e-3}'
Prints one JSON line: the steps and wall seconds, the ESS and acceptance estimate on 4096 fresh float64
proposals, the KL divergence KL(q‖p) = loss + log Z (nats; exact log Z from lattice.exact_u1, averaged over
the last 50 steps), and a trace of (step, seconds, batch ESS averaged over 50 steps).
"""

import json
import math
import sys
import time

import torch

from flows.train import TrainConfig, train_flow
from flows.u1.flow import build_u1_flow
from flows.validation import acceptance_estimate, ess_fraction
from lattice import exact_u1
from lattice.u1 import U1


def main():
    torch.set_num_threads(1)
    flow_config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    train_config = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    size, beta = int(train_config.pop("L", 8)), float(train_config.pop("beta", 2.0))
    seed = int(train_config.pop("seed", 0))
    theory = U1((size, size), beta)
    generator = torch.Generator().manual_seed(seed)
    flow = build_u1_flow(theory, flow_config, generator=generator)
    start = time.perf_counter()
    result = train_flow(flow, theory, TrainConfig.from_mapping(train_config), generator, progress=False)
    wall = time.perf_counter() - start
    x, logq = flow.as_float64(torch.float32).sample(4096, torch.Generator().manual_seed(99))
    logw = -theory.action(x) - logq
    ess_trace = result.metrics["ess"]
    every = max(1, len(ess_trace) // 8)
    # log Z of e^{-S} against Π dθ: the Haar-normalised log Z plus 2V log 2π
    log_z = exact_u1.log_z(beta, (size, size)) + 2 * size * size * math.log(2 * math.pi)
    kl = float(result.metrics["loss"][-50:].mean()) + log_z
    seconds = result.metrics["seconds"]
    trace = [
        (i + 1, round(float(seconds[i]), 1), round(float(ess_trace[max(0, i - 49): i + 1].mean()), 3))
        for i in range(every - 1, len(ess_trace), every)
    ]
    summary = {"flow": flow_config, "train": train_config, "L": size, "beta": beta,
               "steps": result.steps_done,
               "wall_s": round(wall, 1), "ess": round(ess_fraction(logw), 4),
               "acceptance": round(acceptance_estimate(logw), 4), "kl": round(kl, 2), "trace": trace}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

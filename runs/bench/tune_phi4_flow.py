"""Tune the φ⁴ flow at L = 8, m² = −4, λ = 8 on the CPU: train one configuration, print ESS and acceptance.

Usage (from the repository root):
    PYTHONPATH=. .venv/bin/python runs/bench/tune_phi4_flow.py FLOW_JSON TRAIN_JSON [SEED]
e.g. the defaults on one thread:  ... tune_phi4_flow.py '{}' '{"threads": 1}'
FLOW_JSON holds FlowConfig keys, TRAIN_JSON TrainConfig keys plus "threads" (torch intra-op threads,
default 2). Prints one JSON line: wall and CPU seconds, the final ESS and acceptance estimate on 16384
fresh float64 proposals, and a trace of (step, seconds, batch ESS averaged over 50 steps).
"""

import json
import sys
import time

import torch

from flows.model import build_flow
from flows.train import TrainConfig, train_flow
from flows.validation import acceptance_estimate, ess_fraction
from lattice.scalar import Phi4


def evaluate(flow, theory, n=16384, seed=99):
    f64 = flow.as_float64()
    g = torch.Generator().manual_seed(seed)
    x, logq = f64.sample(n, g)
    logw = -theory.action(x) - logq
    return ess_fraction(logw), acceptance_estimate(logw)


def main():
    fcfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    tcfg = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    torch.set_num_threads(int(tcfg.pop("threads", 2)))
    theory = Phi4((8, 8), -4.0, 8.0)
    gen = torch.Generator().manual_seed(seed)
    flow = build_flow(theory, fcfg, generator=gen)
    n_params = sum(p.numel() for p in flow.parameters())
    cfg = TrainConfig.from_mapping(tcfg)
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_flow(flow, theory, cfg, gen, progress=False)
    t1, c1 = time.perf_counter(), time.process_time()
    ess, acc = evaluate(flow, theory)
    m = res.metrics
    k = max(1, len(m["ess"]) // 10)
    trace = [
        (
            int(i + 1),
            round(float(m["seconds"][i]), 1),
            round(float(m["ess"][max(0, i - 49) : i + 1].mean()), 3),
        )
        for i in range(k - 1, len(m["ess"]), k)
    ]
    print(
        json.dumps(
            {
                "flow": fcfg,
                "train": tcfg,
                "seed": seed,
                "params": n_params,
                "steps": res.steps_done,
                "train_s": round(t1 - t0, 1),
                "cpu_s": round(c1 - c0, 1),
                "skipped": res.n_skipped,
                "ess": round(ess, 4),
                "acc": round(acc, 4),
                "trace(step,s,ess50)": trace,
            }
        )
    )


if __name__ == "__main__":
    main()

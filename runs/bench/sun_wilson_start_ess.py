"""ESS and log-weight variance of an untrained SU(N) spectral flow with the Wilson start
(``flow: {init: wilson}``, ``flows.gauge_sun_init``), against the Haar proposal's (β/N)² n_P Var(Re tr P).

Usage (from the repository root), e.g. the 4⁴ SU(3) cards' flow at β = 0.5:
    PYTHONPATH=. .venv/bin/python runs/bench/sun_wilson_start_ess.py --shape 4 4 4 4 --beta 0.5 --n 512
Fresh float64 proposals (float32 conditioners), 64 at a time, one torch thread; prints one line.
"""

import argparse
import math
import time

import torch

from flows.gauge_sun import build_sun_flow
from flows.train import ess_fraction
from lattice.wilson import SUN


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs="+", default=[4, 4, 4, 4])
    ap.add_argument("--beta", type=float, required=True)
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    theory = SUN(tuple(args.shape), args.beta, args.N)
    config = {"n_layers": args.layers, "hidden": [8, 8], "offset_order": "decreasing", "init": "wilson"}
    start = time.process_time()
    flow = build_sun_flow(theory, config).as_float64(torch.float32)
    build_s = time.process_time() - start
    generator = torch.Generator().manual_seed(args.seed)
    logw = []
    start = time.process_time()
    with torch.no_grad():
        for _ in range(max(1, args.n // 64)):
            x, logq = flow.sample(64, generator)
            logw.append(-theory.action(x) - logq)
    sample_s = time.process_time() - start
    logw = torch.cat(logw)
    n_plaquettes = math.comb(len(args.shape), 2) * math.prod(args.shape)
    var_re_tr = 1.0 if args.N == 2 else 0.5
    haar_var = (args.beta / args.N) ** 2 * n_plaquettes * var_re_tr
    print(f"SU({args.N}) {tuple(args.shape)} beta={args.beta} layers={args.layers}: "
          f"ESS {ess_fraction(logw):.3f}, "
          f"var(log w) {logw.var().item():.3f} (Haar {haar_var:.2f}), n={logw.numel()}, "
          f"build {build_s:.1f} CPU s, {1e3 * sample_s / logw.numel():.1f} CPU ms per proposal")


if __name__ == "__main__":
    main()

"""Reweighting check of a trained 4D SU(N) flow: its raw plaquette, the self-normalised importance estimate
⟨P⟩ = Σ w P / Σ w with a bootstrap error, the ESS and the correlation of log w with P.

Usage (from the repository root), e.g. for runs/bench/su3_4d_small/flow_L4_b025.yaml after `latflow run`:
    PYTHONPATH=. .venv/bin/python runs/bench/sun_flow_reweight.py --beta 0.25 \\
        --checkpoint runs/out/bench/su3_4d_small/flow_L4_b025/flow_L4_b025.flow.pt --n 3072
Fresh float64 proposals (float32 conditioners), 64 at a time, one torch thread.
"""

import argparse
import math

import numpy as np
import torch

from flows.registry import load_flow
from flows.validation import ess_fraction
from lattice.wilson import SUN


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--beta", type=float, required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--shape", type=int, nargs="+", default=[4, 4, 4, 4])
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--n", type=int, default=3072)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    theory = SUN(tuple(args.shape), args.beta, args.N)
    flow = load_flow(args.checkpoint, theory).as_float64(torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    plaq, logw = [], []
    with torch.no_grad():
        for _ in range(args.n // 64):
            x, logq = flow.sample(64, generator)
            logw.append(-theory.action(x) - logq)
            plaq.append(theory.observables(x)["plaquette"])
    plaq, logw = torch.cat(plaq).numpy(), torch.cat(logw).numpy()
    w = np.exp(logw - logw.max())
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(400):
        i = rng.integers(0, len(plaq), len(plaq))
        boot.append((w[i] * plaq[i]).sum() / w[i].sum())
    raw_err = plaq.std() / math.sqrt(len(plaq))
    print(f"proposals {len(plaq)}: raw plaquette {plaq.mean():.5f}({raw_err:.5f}), "
          f"reweighted {(w * plaq).sum() / w.sum():.5f} ± {np.std(boot):.5f} (bootstrap), "
          f"ESS {ess_fraction(torch.from_numpy(logw)):.4f}, "
          f"corr(log w, P) {np.corrcoef(logw, plaq)[0, 1]:.2f}")


if __name__ == "__main__":
    main()

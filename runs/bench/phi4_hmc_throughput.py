"""HMC throughput for φ⁴ (m² = −4, λ = 8): chain-trajectories per second at L = 8, 16, 32 with B = 1
and B = 64 batched chains, and the batch speed-up (B = 64 rate / B = 1 rate), measured in one run.

    .venv/bin/python runs/bench/phi4_hmc_throughput.py [--seconds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from lattice.scalar import Phi4
from mcmc.kernels.hmc import HMC


def rate(extent: int, n_chains: int, seconds: float) -> float:
    """Chain-trajectories per second (τ = 1, 10 Omelyan steps) over about ``seconds`` of sampling."""
    theory = Phi4((extent, extent), -4.0, 8.0)
    kernel = HMC(theory, 1.0, 10, "omelyan")
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(theory.random_field(n_chains, gen))
    for _ in range(3):
        state, _ = kernel.step(state, gen)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        state, _ = kernel.step(state, gen)
        n += 1
    return n * n_chains / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'L':>3} {'B=1 traj/s':>12} {'B=64 traj/s':>12} {'speed-up':>9}")
    for extent in (8, 16, 32):
        one, many = rate(extent, 1, args.seconds), rate(extent, 64, args.seconds)
        print(f"{extent:>3} {one:>12.1f} {many:>12.1f} {many / one:>9.1f}")


if __name__ == "__main__":
    main()

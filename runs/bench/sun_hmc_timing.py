"""Time per SU(N) HMC trajectory against lattice volume (4D, Wilson action, one chain).

Usage: .venv/bin/python runs/bench/sun_hmc_timing.py [--n 3] [--threads 1] [--shapes 4,4,4,4 8,8,8,8]
       [--n-steps 10] [--integrator omelyan] [--reps 3] [--chains 1] [--device cpu]

For every lattice it reports the seconds per trajectory (τ = 1, ``n_steps`` steps), per force evaluation
(``SUN.force``: staples + projection) and per exponential-map drift, and the cost per link per force,
which is flat when the cost scales linearly with the volume. The last line is a JSON summary.
"""

import argparse
import json
import time

import torch

from lattice.sun import gaussian_algebra
from lattice.wilson import SUN
from mcmc.kernels.hmc import HMC
from mcmc.kernels.lie import sun_drift


def timed(fn, reps, sync):
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def bench_shape(shape, args, device, sync):
    th = SUN(shape, args.beta, args.n)
    gen = torch.Generator(device=device).manual_seed(0)
    u = th.random_field(args.chains, gen, dtype=torch.float64, device=device)
    kernel = HMC(th, tau=1.0, n_steps=args.n_steps, integrator=args.integrator)
    state = kernel.init(u)
    box = {"state": state}

    def trajectory():
        box["state"], _ = kernel.step(box["state"], gen)

    p = gaussian_algebra(u.shape[:-2], args.n, gen, dtype=u.dtype, device=device)
    t_traj = timed(trajectory, args.reps, sync)
    t_force = timed(lambda: th.force(u), 3 * args.reps, sync)
    t_drift = timed(lambda: sun_drift(u, p, 0.1), 3 * args.reps, sync)
    n_force = 2 * args.n_steps if args.integrator == "omelyan" else args.n_steps
    links = args.chains * th.dim * th.volume
    return {
        "shape": list(shape), "volume": th.volume, "chains": args.chains, "traj_s": t_traj,
        "force_s": t_force, "drift_s": t_drift, "n_force_per_traj": n_force,
        "force_us_per_link": 1e6 * t_force / links, "traj_ms_per_1k_links": 1e3 * t_traj / (links / 1000),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--beta", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", nargs="+", default=["4,4,4,4", "6,6,6,6", "8,8,8,8"])
    ap.add_argument("--n-steps", type=int, default=10)
    ap.add_argument("--integrator", default="omelyan")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = [bench_shape(tuple(int(s) for s in text.split(",")), args, device, sync) for text in args.shapes]
    print(f"SU({args.n}) HMC, {args.integrator} n_steps={args.n_steps}, {args.chains} chain(s), "
          f"{args.threads} thread(s), device {device}")
    header = ("shape", "V", "traj [s]", "force [ms]", "drift [ms]", "force us/link")
    print("{:>12} {:>6} {:>9} {:>11} {:>11} {:>14}".format(*header))
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):>12} {r['volume']:>6} {r['traj_s']:>9.3f} "
              f"{1e3 * r['force_s']:>11.2f} {1e3 * r['drift_s']:>11.2f} {r['force_us_per_link']:>14.3f}")
    print(json.dumps({"N": args.n, "threads": args.threads, "device": str(device),
                      "integrator": args.integrator, "n_steps": args.n_steps, "rows": rows}))


if __name__ == "__main__":
    main()

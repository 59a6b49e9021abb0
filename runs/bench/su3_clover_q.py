"""Topological charge of 4D SU(3) at β = 6 on 8⁴ after Wilson flow: Q clusters near integers.

Usage: .venv/bin/python runs/bench/su3_clover_q.py [--configs 40] [--therm 100] [--every 5]
       [--t-flow 3.0] [--eps 0.05] [--shape 8 8 8 8] [--beta 6.0] [--threads 1] [--seed 0]
       [--out runs/out/bench/su3_clover_q]

HMC (Omelyan, τ = 1, 12 steps) from a Haar start, ``--therm`` trajectories, then every ``--every``-th
trajectory is copied and flowed with Lüscher's RK3 to t = ``--t-flow`` (≈ t_0 ≈ 2.8 a² at β = 6).
Q is measured with the clover field strength along the flow and, at the final flow time, also with the
tree-level O(a²)-improved one (1×1 and 1×2 loops, ``lattice.gradflow.improved_field_strength``).
Writes ``<out>.png`` (histograms of both charges at the final flow time, and the clover Q(t) of every
configuration), ``<out>.json`` (Q, t²E, plaquettes) and prints the distances of Q from the nearest integer.
"""

import argparse
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

from lattice.gradflow import topological_charge, wilson_flow
from lattice.wilson import SUN
from mcmc.kernels.hmc import HMC

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=int, default=40)
    ap.add_argument("--therm", type=int, default=100)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--t-flow", type=float, default=3.0)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--shape", type=int, nargs=4, default=[8, 8, 8, 8])
    ap.add_argument("--beta", type=float, default=6.0)
    ap.add_argument("--n-steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/out/bench/su3_clover_q")
    return ap.parse_args()


def plot(path, q_final, q_improved, t, q_hist, t_flow):
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    both = np.concatenate([q_final, q_improved])
    lo, hi = np.floor(both.min()) - 1, np.ceil(both.max()) + 1
    bins = np.arange(lo, hi + 1e-9, 0.05)
    ax0.hist(q_final, bins=bins, color="C0", alpha=0.6, label="clover")
    ax0.hist(q_improved, bins=bins, color="C3", alpha=0.6, label="O(a²)-improved (1×1, 1×2)")
    for k in np.arange(lo, hi + 1):
        ax0.axvline(k, color="grey", lw=0.5, ls=":")
    ax0.legend(fontsize=8)
    ax0.set_xlabel(f"Q at t = {t_flow:g} a²")
    ax0.set_ylabel("configurations")
    ax1.plot(t, q_hist, lw=0.8)
    ax1.set_xlabel("flow time t / a²")
    ax1.set_ylabel("clover Q(t)")
    fig.suptitle("4D SU(3) Wilson, β = 6: topological charge after Wilson flow")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def sample(args, theory, kernel, state, gen):
    """``--configs`` configurations, each ``--every`` trajectories apart and flowed to ``--t-flow``: their
    clover Q(t), t²E(t), improved Q, plaquette, the per-trajectory acceptance and the seconds spent."""
    m = {"q_hist": [], "q_improved": [], "e_hist": [], "plaq": [], "acc": [], "times": None,
         "t_hmc": 0.0, "t_flow": 0.0}
    for c in range(args.configs):
        t1 = time.perf_counter()
        for _ in range(args.every):
            state, info = kernel.step(state, gen)
            m["acc"].append(float(info.accepted.double().mean()))
        t2 = time.perf_counter()
        flowed, hist = wilson_flow(state.x, args.t_flow, eps=args.eps, measure_every=2)
        m["q_improved"].append(float(topological_charge(flowed, "improved")[0]))
        t3 = time.perf_counter()
        m["t_hmc"], m["t_flow"] = m["t_hmc"] + t2 - t1, m["t_flow"] + t3 - t2
        m["times"] = hist.t.numpy()
        m["q_hist"].append(hist.Q[:, 0].numpy())
        m["e_hist"].append(hist.t2E[:, 0].numpy())
        m["plaq"].append(float(theory.observables(state.x)["plaquette"][0]))
        print(f"config {c:3d}: plaquette {m['plaq'][-1]:.5f}  "
              f"Q(t={args.t_flow:g}) = {m['q_hist'][-1][-1]:+.4f}  "
              f"improved {m['q_improved'][-1]:+.4f}  "
              f"t²E = {m['e_hist'][-1][-1]:.4f}  (hmc {t2 - t1:.1f} s, flow {t3 - t2:.1f} s)", flush=True)
    return m


def summarize(args, m, t_therm):
    """The JSON summary: Q at the final flow time (clover and improved), their distances to integers."""
    q_final = np.array(m["q_hist"])[:, -1]
    dist = np.abs(q_final - np.round(q_final))
    q_imp = np.array(m["q_improved"])
    dist_imp = np.abs(q_imp - np.round(q_imp))
    acc = m["acc"]
    return {
        "shape": args.shape, "beta": args.beta, "t_flow": args.t_flow, "eps": args.eps,
        "configs": args.configs,
        "every": args.every, "therm": args.therm, "acceptance": float(np.mean(acc)) if acc else None,
        "plaquette_mean": float(np.mean(m["plaq"])), "Q": q_final.tolist(),
        "round_Q": np.round(q_final).tolist(),
        "max_dist_to_integer": float(dist.max()), "mean_dist_to_integer": float(dist.mean()),
        "Q2_mean": float(np.mean(np.round(q_final) ** 2)),
        "Q_improved": q_imp.tolist(), "max_dist_to_integer_improved": float(dist_imp.max()),
        "mean_dist_to_integer_improved": float(dist_imp.mean()),
        "t2E_final_mean": float(np.mean([e[-1] for e in m["e_hist"]])),
        "timing_s": {"therm": t_therm, "hmc": m["t_hmc"], "flow": m["t_flow"]}, "threads": args.threads,
    }


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    theory = SUN(tuple(args.shape), args.beta, 3)
    kernel = HMC(theory, tau=1.0, n_steps=args.n_steps, integrator="omelyan")
    gen = torch.Generator().manual_seed(args.seed)
    state = kernel.init(theory.random_field(1, gen))
    t0 = time.perf_counter()
    for _ in range(args.therm):
        state, info = kernel.step(state, gen)
    t_therm = time.perf_counter() - t0
    m = sample(args, theory, kernel, state, gen)
    summary = summarize(args, m, t_therm)
    q, q_final, q_imp = np.array(m["q_hist"]), np.array(summary["Q"]), np.array(summary["Q_improved"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(out.with_suffix(".png"), q_final, q_imp, m["times"], q.T, args.t_flow)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(f"max |Q − round(Q)| = {summary['max_dist_to_integer']:.3f}, "
          f"mean = {summary['mean_dist_to_integer']:.3f}; "
          f"rounded charges {sorted(set(np.round(q_final).astype(int).tolist()))}; "
          f"⟨t²E⟩(t={args.t_flow:g}) = {summary['t2E_final_mean']:.4f}")
    print(f"improved: max |Q − round(Q)| = {summary['max_dist_to_integer_improved']:.3f}, "
          f"mean = {summary['mean_dist_to_integer_improved']:.3f}; "
          f"rounded charges {sorted(set(np.round(q_imp).astype(int).tolist()))}")
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

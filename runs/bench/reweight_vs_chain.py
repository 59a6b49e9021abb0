"""Which estimator of a flow ensemble has the smaller error per second: the chain (Gamma method) or
the self-normalised reweighted estimate over all proposals (blocked jackknife)?

Runs ``latflow run --resume --json`` on each card (an existing complete ensemble is reused) and
prints, per observable, both errors and the ratio of their figures of merit σ²·t (the same sampling
seconds t, read from the ensemble file, serve both, since the reweighted estimate reuses the chain's
proposals): a ratio > 1 means reweighting reaches a given error that many times faster. Usage (one
thread, niced, from the repository root):

    OMP_NUM_THREADS=1 nice python runs/bench/reweight_vs_chain.py runs/bench/reweight/*.yaml
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py

from mcmc.card import load_card
from mcmc.io.store import replica_path


def run(card: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "mcmc.cli", "run", card, "--json", "--quiet", "--no-plots",
                          "--resume"], check=True, capture_output=True, text=True).stdout
    print(out.rsplit("\n", 2)[0], flush=True)
    summary = json.loads(out.strip().splitlines()[-1])
    card_ = load_card(card)
    with h5py.File(replica_path(card_.out, card_.ensemble, 0), "r") as f:
        summary["timing"] = {k: float(f.attrs[k]) for k in ("train_s", "sample_s", "sample_cpu_s")}
    return summary


def table(card: str, s: dict) -> list[str]:
    t = s["timing"]["sample_cpu_s"]
    head = (f"{card}: acceptance {s['acceptance']:.3f}, ESS {s['ess']:.3f}, k̂ {s['pareto_k']:.2f}, "
            f"sampling {t:.1f} CPU s, {s['n_configs']} proposals")
    rows = [head, "| observable | chain | err | reweighted | err | (σ_chain/σ_rw)² |", "| --- " * 6 + "|"]
    for name, c in s["observables"].items():
        r = s["reweighted"][name]
        rows.append(f"| {name} | {c['mean']:.6g} | {c['err']:.3g} | {r['mean']:.6g} | {r['err']:.3g} | "
                    f"{(c['err'] / r['err']) ** 2:.2f} |")
    return rows


if __name__ == "__main__":
    for card in sys.argv[1:]:
        print("\n".join(table(card, run(card))), flush=True)

"""Weak scaling of ensemble generation under MPI: the same per-rank work with 1 and with R ranks.

    .venv/bin/python runs/bench/mpi_weak_scaling.py [--ranks 2] [--n-configs 400] [--repeat 1]

Each rank samples its own replica (U(1), L = 8, β = 2, HMC, 4 chains per rank, one torch thread per
rank). The throughput is stored configurations (all chains, all ranks) per second of sampling, with
the sampling time of the slowest rank (``timing.sample_s`` of ``latflow run --json``). Ideal weak
scaling gives a throughput ratio of R and an efficiency t_1 / t_R of 1.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def card(out: Path, n_configs: int) -> Path:
    path = out / "card.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "theory": {"name": "u1", "shape": [8, 8], "beta": 2.0},
                "sampler": {"kind": "hmc"},
                "hmc": {"tau": 1.0, "n_steps": 10, "integrator": "omelyan"},
                "sample": {"n_configs": n_configs, "n_therm": 50, "n_chains": 4, "progress": False},
                "seed": 2024,
                "device": "cpu",
                "out": str(out / "out"),
            }
        )
    )
    return path


def run(ranks: int, n_configs: int) -> tuple[int, float]:
    """(configurations stored by all ranks, sampling seconds of the slowest rank)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(BIN / "mpiexec"),
            "-n",
            str(ranks),
            str(BIN / "latflow"),
            "run",
            str(card(Path(tmp), n_configs)),
        ]
        cmd += ["--json", "--quiet", "--no-plots"]
        env = {**os.environ, "OMP_NUM_THREADS": "1",  # Open MPI as root needs both; MPICH ignores them
               "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode:
            sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
    return summary["n_configs"], summary["timing"]["sample_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--n-configs", type=int, default=400, help="per rank and chain")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs each")
    args = ap.parse_args()
    results = {}
    for ranks in (1, args.ranks):
        runs = [run(ranks, args.n_configs) for _ in range(args.repeat)]
        n, t = min(runs, key=lambda nt: nt[1])
        results[ranks] = (n, t, n / t)
        print(f"mpiexec -n {ranks}: {n} configurations in {t:.2f} s -> {n / t:.1f} configs/s")
    (_, t1, r1), (_, tr, rr) = results[1], results[args.ranks]
    print(f"throughput ratio n={args.ranks} / n=1: {rr / r1:.2f} (ideal {args.ranks})")
    print(f"weak-scaling efficiency t1 / t{args.ranks}: {t1 / tr:.2f} (ideal 1)")
    print(f"cores available: {os.cpu_count()}")


if __name__ == "__main__":
    main()

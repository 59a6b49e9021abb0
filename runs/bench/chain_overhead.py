"""The per-update work of flow sampling around the proposals (issue 19, "chain updates/s").

Runs the real driver (``mcmc.driver.run_chain`` with ``IndependenceMetropolis.steps`` and an HDF5
``EnsembleWriter`` in a temporary folder, checkpoint callback included) on a φ⁴ flow and times the
refills (the flow's proposals, their action and observables) apart from everything else: the
accept/reject pass, the in-stream measurement, the block records, checksums, HDF5 appends and
checkpoints. Prints one JSON line per chain count:

    configs_per_s        all stored configurations per second of the run (proposals included)
    overhead_per_s       configurations per second of everything but the refills
    overhead_us          microseconds per configuration outside the refills

Usage (repository root):  OMP_NUM_THREADS=1 PYTHONPATH=. python runs/bench/chain_overhead.py
    [--L 4] [--chains 4 64] [--configs 20000] [--device cpu] [--dtype float32|float64]
Times are CPU seconds of this process on the CPU (robust to other jobs), wall-clock on CUDA.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from flows.model import build_flow
from flows.proposal import proposal_flow
from lattice.scalar import Phi4
from mcmc.driver import Schedule, run_chain
from mcmc.io.store import EnsembleWriter, save_atomic
from mcmc.kernels.independence import IndependenceMetropolis


def _clock(device: torch.device):  # noqa: ANN202
    if device.type == "cuda":
        def wall() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return wall
    return time.process_time


def run(L: int, chains: int, configs: int, device: torch.device, dtype: str, *, theory: Phi4 | None = None,
        flow_config: dict | None = None, compile_mode: str = "off", batch: int = 8192) -> dict:
    """One timed ``run_chain`` of ``configs`` stored updates of ``chains`` chains (no thermalisation) of
    ``theory`` (default φ⁴ L×L at m² = −4, λ = 8) with an untrained flow of ``flow_config`` (default: the
    default flow), proposing in ``dtype`` with layers compiled per ``compile_mode``, ``batch`` proposals
    per chain and refill."""
    theory = theory or Phi4((L, L), m2=-4.0, lam=8.0)
    flow = build_flow(theory, flow_config or {}, generator=torch.Generator().manual_seed(0), device=device)
    kernel = IndependenceMetropolis(theory, proposal_flow(flow, dtype, compile_mode, device), batch=batch)
    clock, spent = _clock(device), [0.0]
    refill = kernel.refill

    def timed_refill(state, generator):  # noqa: ANN001, ANN202
        t0 = clock()
        out = refill(state, generator)
        spent[0] += clock() - t0
        return out

    kernel.refill = timed_refill
    warm = torch.Generator(device=device).manual_seed(2)  # compiles the refill's shape outside the timing
    rows = kernel.max_rows(kernel.flow.draw_prior(chains, warm))
    with torch.inference_mode():
        kernel.flow.push(kernel.flow.draw_prior(rows * chains, warm))
    g = torch.Generator(device=device).manual_seed(1)
    state = kernel.init_from_flow(chains, g)
    with tempfile.TemporaryDirectory() as tmp:
        names = list(theory.observables(state.x))
        writer = EnsembleWriter.create(
            Path(tmp) / "bench.r0.h5", field_shape=tuple(state.x.shape[1:]), n_chains=chains,
            field_dtype=str(state.x.dtype).removeprefix("torch."), obs_names=names, attrs={},
            proposal_obs_names=tuple(names),
        )

        def on_block(st, pos, _spent) -> None:  # noqa: ANN001
            save_atomic({"update": pos.update}, Path(tmp) / "bench.r0.ckpt")

        t0 = clock()
        run_chain(kernel, state, g, schedule=Schedule(0, configs, 1, block=1000), measure=theory.observables,
                  writer=writer, field_dtype=state.x.dtype, on_block=on_block, progress=False)
        total = clock() - t0
        writer.close(complete=True)
    n = configs * chains
    rest = max(total - spent[0], 1e-12)
    return {"L": int(state.x.shape[1]), "chains": chains, "updates": configs, "device": str(device),
            "proposal_dtype": dtype, "compile": compile_mode,
            "seconds": round(total, 3), "refill_seconds": round(spent[0], 3),
            "configs_per_s": round(n / total, 1), "overhead_per_s": round(n / rest, 1),
            "overhead_us": round(1e6 * rest / n, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--chains", type=int, nargs="+", default=[4, 64])
    ap.add_argument("--configs", type=int, default=20000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    device = torch.device(args.device)
    for chains in args.chains:
        print(json.dumps(run(args.L, chains, args.configs, device, args.dtype)), flush=True)


if __name__ == "__main__":
    main()

"""How a curriculum stage's flow starts the next lattice size: fresh Fourier layer against ρ_k carried by
momentum (``FourierScaling.resize_parameter``). Loads a finished stage checkpoint, builds the flow for the
target lattice both ways and prints ESS, mean and variance of log w over N proposals (float64 map).

Usage (repository root), e.g. the near-critical φ⁴ curriculum's L = 20 stage carried to L = 32:
    OMP_NUM_THREADS=1 PYTHONPATH=. python runs/bench/curriculum_carry_check.py \\
        runs/out/bench/phi4_critical/flow_L32/flow_L32.stage1.flow.pt --source 20 4.807 --target 32 4.572
"""

from __future__ import annotations

import argparse

import torch

from flows.checkpoint import load_checkpoint
from flows.model import build_flow
from flows.validation import ess_fraction, validation_logw
from lattice.scalar import Phi4
from mcmc.curriculum import carry_weights


def weights_stats(flow: torch.nn.Module, theory: Phi4, n: int) -> str:
    """ESS, mean and variance of log w = −S − log q over ``n`` proposals of the float64 map, the same
    prior draws every call (``flows.validation``)."""
    with torch.no_grad():
        logw = validation_logw(flow.as_float64(conditioner_dtype=torch.float32), theory, n, seed=8191)
    return (f"ESS {ess_fraction(logw):.4f}  mean log w {float(logw.mean()):.1f}  "
            f"var log w {float(logw.var()):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--source", nargs=2, type=float, metavar=("L", "LAM"), required=True)
    ap.add_argument("--target", nargs=2, type=float, metavar=("L", "LAM"), required=True)
    ap.add_argument("--m2", type=float, default=-4.0)
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    (ls, lam_s), (lt, lam_t) = args.source, args.target
    source_theory = Phi4((int(ls),) * 2, m2=args.m2, lam=lam_s)
    target = Phi4((int(lt),) * 2, m2=args.m2, lam=lam_t)
    saved = load_checkpoint(args.checkpoint, source_theory)
    source = build_flow(source_theory, saved["flow_config"])
    source.load_state_dict(saved["model"])
    print(f"source at L = {int(ls)}: {weights_stats(source, source_theory, args.n)}")
    fresh = build_flow(target, saved["flow_config"], generator=torch.Generator().manual_seed(0))
    same = {k: v for k, v in source.state_dict().items() if v.shape == fresh.state_dict()[k].shape}
    fresh.load_state_dict({**fresh.state_dict(), **same})
    print(f"L = {int(lt)}, Fourier layer fresh:   {weights_stats(fresh, target, args.n)}")
    carried = build_flow(target, saved["flow_config"], generator=torch.Generator().manual_seed(0))
    carry_weights(source, carried)
    print(f"L = {int(lt)}, Fourier layer carried: {weights_stats(carried, target, args.n)}")


if __name__ == "__main__":
    main()

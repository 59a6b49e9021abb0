"""ESS and log-weight variance of an untrained SU(N) spectral flow with the Wilson start
(``flow: {init: wilson}``, ``flows.sun.starts``), against the Haar proposal's (β/N)² n_P Var(Re tr P).

Usage (from the repository root), e.g. the 4⁴ SU(3) cards' flow at β = 0.5:
    PYTHONPATH=. .venv/bin/python runs/bench/sun_wilson_start_ess.py --shape 4 4 4 4 --beta 0.5 --n 512
Fresh float64 proposals (float32 conditioners), 64 at a time, one torch thread; prints one line. With
``--train-seconds S`` the flow is then trained by reverse KL from that start for S CPU seconds (float32,
Adam at ``--lr``, constant, batch ``--batch``, gradient ``--estimator`` (path), the best flow by
validation ESS every ``--eval-every`` steps kept) and the same proposals are measured again.
``--init identity`` starts from the identity couplings (Haar proposals) instead of the Wilson start;
``--stick-basis K`` makes stick k's spline depend on stick k−1 (``flow.stick_basis``).
"""

import argparse
import math
import time

import torch

from flows.sun.flow import build_sun_flow
from flows.train import TrainConfig, train_flow
from flows.validation import ess_fraction
from lattice.wilson import SUN


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs="+", default=[4, 4, 4, 4])
    ap.add_argument("--beta", type=float, required=True)
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--train-seconds", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--init", choices=("wilson", "identity"), default="wilson")
    ap.add_argument("--estimator", choices=("path", "reparam", "reinforce"), default="path")
    ap.add_argument("--eval-every", type=int, default=100, help="validation every k steps")
    ap.add_argument("--stick-basis", type=int, default=1,
                    help="flow.stick_basis: K features of stick k−1 in stick k's spline (1: each on its own)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    theory = SUN(tuple(args.shape), args.beta, args.N)
    config = {"n_layers": args.layers, "hidden": [8, 8], "offset_order": "decreasing", "init": args.init,
              "stick_basis": args.stick_basis}
    start = time.process_time()
    flow = build_sun_flow(theory, config)
    print(f"built in {time.process_time() - start:.1f} CPU s")
    report(theory, flow, args, "untrained")
    if args.train_seconds > 0:
        train = TrainConfig(steps=10**9, batch_size=args.batch, lr=args.lr, schedule="constant",
                            max_seconds=args.train_seconds, clock="cpu", estimator=args.estimator,
                            eval_every=args.eval_every)
        result = train_flow(flow, theory, train, torch.Generator().manual_seed(args.seed + 1), progress=False)
        report(theory, flow, args, f"after {result.steps_done} steps ({result.cpu_seconds:.0f} CPU s)")


def report(theory: SUN, flow: torch.nn.Module, args: argparse.Namespace, label: str) -> None:
    """ESS and log-weight variance of ``args.n`` fresh float64 proposals (seed ``args.seed``)."""
    proposal = flow.as_float64(torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    logw = []
    start = time.process_time()
    with torch.no_grad():
        for _ in range(max(1, args.n // 64)):
            x, logq = proposal.sample(64, generator)
            logw.append(-theory.action(x) - logq)
    sample_s = time.process_time() - start
    logw = torch.cat(logw)
    n_plaquettes = math.comb(len(args.shape), 2) * math.prod(args.shape)
    var_re_tr = 1.0 if args.N == 2 else 0.5
    haar_var = (args.beta / args.N) ** 2 * n_plaquettes * var_re_tr
    print(f"SU({args.N}) {tuple(args.shape)} beta={args.beta} layers={args.layers} init={args.init} "
          f"stick_basis={args.stick_basis}, "
          f"{label}: "
          f"ESS {ess_fraction(logw):.3f}, var(log w) {logw.var().item():.3f} (Haar {haar_var:.2f}), "
          f"n={logw.numel()}, {1e3 * sample_s / logw.numel():.1f} CPU ms per proposal")

if __name__ == "__main__":
    main()

"""ESS of fresh proposals from a card's trained flow checkpoint, beside the same flow untrained.

Usage (from the repository root), e.g. the 4⁴ SU(3) β = 1 card after ``latflow train``:
    PYTHONPATH=. .venv/bin/python runs/bench/flow_checkpoint_ess.py \
        runs/bench/su3_4d_small/flow_L4_b1.yaml --n 512
Both flows are float64 proposals with float32 conditioners (as sampling uses); the proposals are drawn
64 at a time from a generator seeded with ``--seed`` (not the training's validation seed). Prints, per flow,
the ESS (Σw)²/(N Σw²), the variance of log w and the checkpoint's step, best step and training CPU seconds.
"""

import argparse

import torch

from flows.checkpoint import load_checkpoint
from flows.train import last_cpu_seconds
from flows.validation import ess_fraction, validation_logw
from mcmc.card import load_card
from mcmc.setup import build_theory, family, flow_config, flow_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("card")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()
    torch.set_num_threads(1)
    card = load_card(args.card)
    theory = build_theory(card)
    saved = load_checkpoint(flow_path(card), theory, flow_config(card).to_dict())
    untrained = family(card).build(theory, saved["flow_config"])
    trained = family(card).build(theory, saved["flow_config"])
    trained.load_state_dict(saved["model"])
    best = saved.get("best", {}).get("step", "-")
    cpu = last_cpu_seconds(saved["metrics"], default=0.0)
    print(f"checkpoint: step {saved['step']}, best step {best}, {cpu:.0f} CPU s of training")
    for label, flow in (("untrained", untrained), ("trained", trained)):
        logw = validation_logw(flow.as_float64(torch.float32), theory, args.n, args.seed, chunk=64)
        print(f"{label:9s} ESS {ess_fraction(logw):.4f}  var(log w) {logw.var().item():.3f}  (n = {args.n})")


if __name__ == "__main__":
    main()

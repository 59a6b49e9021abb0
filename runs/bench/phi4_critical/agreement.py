"""Do the samplers of one `latflow compare` agree? For every card of a compare JSON summary, ⟨|M|⟩/V and
⟨M²⟩/V with Gamma-method errors from its ensemble, its deviation from the first card, and the largest
deviation over all pairs, in units of the combined error; exits 1 if any pair differs by more than 4σ.

Usage (repository root):
    .venv/bin/python runs/bench/phi4_critical/agreement.py runs/out/bench/phi4_critical/L12.json
"""

import json
import math
import sys
from pathlib import Path

from mcmc.card import load_card
from mcmc.io.store import replica_path
from mcmc.report import summarize_files

OBSERVABLES = ("absmag", "mag2")


def card_results(card_path):
    card = load_card(card_path, [])
    return summarize_files([replica_path(card.out, card.ensemble, 0)]).results


def main():
    rows = [r for r in json.loads(Path(sys.argv[1]).read_text())["rows"] if not r.get("estimator")]
    results = [card_results(r["card"]) for r in rows]
    worst = 0.0
    for obs in OBSERVABLES:
        ref = results[0][obs]
        for row, res in zip(rows, results, strict=True):
            mine = res[obs]
            dev = 0.0 if res is results[0] else (mine.mean - ref.mean) / math.hypot(mine.err, ref.err)
            print(f"{obs:7s} {Path(row['card']).stem:16s} {mine.mean:.5f}({mine.err:.5f})  {dev:+.2f} sigma")
        for i, a in enumerate(results):
            for b in results[i + 1:]:
                worst = max(worst, abs(a[obs].mean - b[obs].mean) / math.hypot(a[obs].err, b[obs].err))
    print(f"largest deviation between any two samplers: {worst:.2f} sigma")
    sys.exit(1 if worst > 4 else 0)


if __name__ == "__main__":
    main()

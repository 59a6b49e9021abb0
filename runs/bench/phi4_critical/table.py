"""The near-critical φ⁴ table: one line per L and sampler from the `latflow compare --clock cpu --json`
summaries that run_all.sh writes (runs/out/bench/phi4_critical/L<L>.json), with ⟨|M|⟩/V measured again from
each ensemble (Gamma method). Prints Markdown; costs in CPU milliseconds.

Usage (repository root):
    .venv/bin/python runs/bench/phi4_critical/table.py runs/out/bench/phi4_critical/L12.json ...
"""

import json
import sys
from pathlib import Path

import yaml
from agreement import card_results


def label(row):
    card = yaml.safe_load(Path(row["card"]).read_text())
    if row["sampler"] == "hmc":
        return f"hmc τ={card['hmc']['tau']:g}"
    if row["sampler"] == "local":
        return "cluster (Wolff)" if (card.get("local") or {}).get("cluster") else "local Metropolis"
    if row.get("estimator"):  # compare's extra row: the flow's best estimator (all proposals, reweighted)
        return "flow, all proposals reweighted"
    return row["sampler"]


def tau(row, obs):
    """τ_int with its error; for the reweighted estimator the effective τ_int (no error): the chain's
    variance of the mean over the estimator's, in configurations."""
    err = row["tau_int_err"][obs]
    return f"{row['tau_int'][obs]:.3g} (eff.)" if err is None else f"{row['tau_int'][obs]:.3g}({err:.2g})"


def line(L, row):
    if row.get("estimator"):
        res = None
    else:
        res = card_results(row["card"])["absmag"]
    cost = row["cost_per_indep_s"]["absmag"]
    be = row["break_even_configs"]["absmag"]
    be = "–" if be is None else f"{be:.2g}"
    ess = "–" if row["ess"] is None else f"{row['ess']:.3f}"
    return (f"| {L} | {label(row)} | {row['acceptance']:.3f} | {ess} | {tau(row, 'absmag')} "
            f"| {tau(row, 'mag2')} | {1e3 * row['seconds_per_config']:.3g} | {1e3 * cost:.3g} "
            f"| {row['cost_ratio']['absmag']:.3g} | {row['train_s']:.0f} | {be} "
            f"| {'as above' if res is None else f'{res.mean:.5f}({1e5 * res.err:.0f})'} |")


def main():
    print("| L | sampler | acceptance | ESS | τ_int(\\|M\\|) | τ_int(M²) | CPU ms / config "
          "| CPU ms / indep. \\|M\\| | cost ÷ HMC | training CPU s | break-even configs | ⟨\\|M\\|⟩/V |")
    print("|" + "---|" * 12)
    for path in sys.argv[1:]:
        rows = json.loads(Path(path).read_text())["rows"]
        L = yaml.safe_load(Path(rows[0]["card"]).read_text())["theory"]["shape"][0]
        for row in rows:
            print(line(L, row))


if __name__ == "__main__":
    main()

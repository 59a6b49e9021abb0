"""Collect `latflow compare --json` summaries of a parameter scan into one Markdown table and one figure.

Usage (from the repository root), e.g. for the φ⁴ scaling study and the U(1) β scan:
    .venv/bin/python runs/bench/scan_report.py --param L --obs absmag runs/out/bench/phi4_scaling/L*.json
    .venv/bin/python runs/bench/scan_report.py --param beta --obs Q runs/out/bench/u1_L16/b*.json
Each JSON file is the last line `latflow compare ... --json` printed for one parameter value. Writes
<out>/scan_<obs>.md and <out>/cost_vs_<param>_<obs>.png (out: the first file's folder) and prints the table.
"""

import argparse
import json
from pathlib import Path

import yaml

from observables.compare_plots import plot_cost_scan


def param_value(card_path, param):
    theory = yaml.safe_load(Path(card_path).read_text())["theory"]
    return theory["shape"][0] if param == "L" else theory[param]


def sampler_label(row):
    """The row's sampler, with local updates that add Wolff clusters (``local.cluster``) named apart."""
    if row["sampler"] == "local":
        cluster = (yaml.safe_load(Path(row["card"]).read_text()).get("local") or {}).get("cluster")
        if cluster:
            return f"local+{cluster}"
    return row["sampler"]


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}g}"


def tau_text(row, obs):
    tau, err = row["tau_int"].get(obs), row["tau_int_err"].get(obs)
    if tau is None:
        return "–"
    return f"{tau:.3g} (eff.)" if err is None else f"{tau:.3g}({err:.2g})"  # eff.: a reweighted estimate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--param", required=True)
    ap.add_argument("--obs", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    entries = []
    for f in args.files:
        text = Path(f).read_text().strip()
        if not text:
            continue
        for row in json.loads(text)["rows"]:
            entries.append((param_value(row["card"], args.param), row))
    entries.sort(key=lambda e: e[0])  # stable: the cards keep their compare order
    head = (f"| {args.param} | sampler | acceptance | ESS | τ_int({args.obs}) | ms / config | "
            f"ms / indep. {args.obs} | cost ÷ HMC | training s | break-even configs |")
    lines = [head, "|" + "---|" * 10]
    for value, r in entries:
        cost = r["cost_per_indep_s"].get(args.obs)
        be = r["break_even_configs"].get(args.obs)
        lines.append(
            f"| {value} | {sampler_label(r)} | {fmt(r['acceptance'])} | {fmt(r['ess'])} "
            f"| {tau_text(r, args.obs)} | "
            f"{1e3 * r['seconds_per_config']:.3g} | {fmt(None if cost is None else 1e3 * cost)} | "
            f"{fmt(r['cost_ratio'].get(args.obs))} | {r['train_s']:.0f} | {fmt(be, 2) if be else '–'} |")
    table = "\n".join(lines)
    out = Path(args.out or Path(args.files[0]).parent)
    (out / f"scan_{args.obs}.md").write_text(table + "\n")
    values = sorted({v for v, _ in entries})
    cost = {}
    for sampler in sorted({sampler_label(r) for _, r in entries}):
        by_value = {v: r["cost_per_indep_s"].get(args.obs) for v, r in entries if sampler_label(r) == sampler}
        cost[sampler] = [by_value.get(v) if by_value.get(v) is not None else float("nan") for v in values]
    plot_cost_scan(args.param, values, cost, out / f"cost_vs_{args.param}_{args.obs}.png", args.obs)
    print(table)


if __name__ == "__main__":
    main()

"""``latflow compare``: several samplers on one theory, side by side, with honest costs.

For each card the ensemble is generated (or an existing complete one reused), then measured with the
Gamma method. The cost of one independent sample of observable O is

    cost(O) = 2 τ_int(O) × (sampling seconds per stored configuration),

with seconds per configuration = sample_s / (n_configs × n_chains) summed over replicas, since B
chains advance together. Training is reported separately; a flow's break-even point is the number
of its configurations after which train_s + n·c_flow < n·c_ref (costs per configuration scaled to
independent samples), i.e. n_indep = train_s / (c_ref − c_flow) independent samples.

Seconds are wall-clock by default. With ``clock="cpu"`` they are the CPU seconds of each run's process
(all its threads; recorded beside the wall-clock ones in every ensemble file): on a machine shared with
other jobs, wall-clock costs grow with the load at the moment each card ran, CPU seconds much less.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcmc.card import Card, CardError, load_card
from mcmc.report import Summary, summarize_files

log = logging.getLogger("latflow")


@dataclass(frozen=True)
class Row:
    """One sampler's line of the comparison."""

    card: str
    sampler: str
    acceptance: float
    ess: float | None
    train_s: float
    sample_s: float
    seconds_per_config: float
    tau_int: dict[str, float]
    tau_int_err: dict[str, float | None]
    cost_per_indep_s: dict[str, float]
    cost_ratio: dict[str, float | None]
    break_even_configs: dict[str, float | None]
    estimator: dict[str, str] = field(default_factory=dict)  # the best-estimator row of a flow run

    def to_json(self) -> dict[str, Any]:
        return {
            "card": self.card,
            "sampler": self.sampler,
            "acceptance": self.acceptance,
            "ess": self.ess,
            "train_s": self.train_s,
            "sample_s": self.sample_s,
            "seconds_per_config": self.seconds_per_config,
            "tau_int": self.tau_int,
            "tau_int_err": self.tau_int_err,
            "cost_per_indep_s": self.cost_per_indep_s,
            "cost_ratio": self.cost_ratio,
            "break_even_configs": self.break_even_configs,
            "estimator": self.estimator or None,
        }


def load_cards(paths: Sequence[str], overrides: list[str]) -> list[Card]:
    """Load every card and refuse a set whose theories differ."""
    cards = [load_card(p, overrides) for p in paths]
    first = cards[0].theory.model_dump()
    for path, card in zip(paths[1:], cards[1:], strict=True):
        if card.theory.model_dump() != first:
            raise CardError(
                f"{path}: theory {card.theory.model_dump()} differs from {paths[0]}'s {first}; "
                "compare needs one theory"
            )
    outs = [str(Path(c.out).resolve()) + "/" + c.ensemble for c in cards]
    if len(set(outs)) != len(outs):
        raise CardError(
            "compare needs a distinct out/name for every card (two cards would share an ensemble)"
        )
    return cards


def _row(path: str, summary: Summary, train_s: float, sample_s: float) -> dict[str, Any]:
    per_config = sample_s / summary.n_configs if summary.n_configs else math.nan
    tau = {k: float(r.tau_int) for k, r in summary.results.items()}
    return {
        "card": path,
        "sampler": summary.sampler,
        "acceptance": summary.acceptance,
        "ess": summary.ess,
        "train_s": train_s,
        "sample_s": sample_s,
        "seconds_per_config": per_config,
        "tau_int": tau,
        "tau_int_err": {k: float(r.tau_int_err) for k, r in summary.results.items()},
        "cost_per_indep_s": {k: 2 * t * per_config for k, t in tau.items()},
    }


def _best_row(chain_row: dict[str, Any], summary: Summary) -> dict[str, Any] | None:
    """The flow run's row with, per observable, the better of its two estimators: the chain, or the
    reweighted estimate over all proposals. The reweighted one is given the τ_int that a chain of the
    same length would need for its error, τ_rw = N σ²_rw / (2 Γ(0)) with Γ(0) the chain's variance."""
    checks = summary.flow
    if checks is None or not checks.reweighted:
        return None
    tau, estimator = dict(chain_row["tau_int"]), {}
    for k, res in summary.results.items():
        rw = checks.reweighted.get(k)
        estimator[k] = "chain"
        if rw is not None and res.variance > 0:
            tau_rw = summary.n_configs * rw.err**2 / (2 * res.variance)
            if tau_rw < tau[k]:
                tau[k], estimator[k] = tau_rw, "reweighted"
    per_config = chain_row["seconds_per_config"]
    return {**chain_row, "sampler": f"{summary.sampler} (best)", "tau_int": tau,
            "tau_int_err": {k: None if estimator[k] == "reweighted" else v
                            for k, v in chain_row["tau_int_err"].items()},
            "cost_per_indep_s": {k: 2 * t * per_config for k, t in tau.items()}, "estimator": estimator}


def _break_even(row: dict[str, Any], ref: dict[str, Any], obs: str) -> float | None:
    """Configurations of this sampler after which its training has paid off against ``ref``."""
    saving = ref["cost_per_indep_s"][obs] - row["cost_per_indep_s"][obs]
    if row["train_s"] <= 0 or saving <= 0:
        return None
    return row["train_s"] / saving * 2 * row["tau_int"][obs]


def build_rows(raw: list[dict[str, Any]]) -> list[Row]:
    """Add the cost ratios to the first card and the break-even points to the raw rows."""
    first = raw[0]
    rows = []
    for r in raw:
        ratio = {
            k: (c / first["cost_per_indep_s"][k] if first["cost_per_indep_s"][k] > 0 else None)
            for k, c in r["cost_per_indep_s"].items()
        }
        ref = next((x for x in raw if x["train_s"] <= 0), first)
        be = {k: _break_even(r, ref, k) for k in r["tau_int"]}
        rows.append(Row(**{"estimator": {}, **r}, cost_ratio=ratio, break_even_configs=be))
    return rows


def markdown_table(rows: Sequence[Row]) -> str:
    """The comparison as a Markdown table, one line per sampler and observable."""
    head = (
        "| card | sampler | acceptance | ESS | train s | s/config | observable | τ_int | "
        "cost per indep. s | ratio to first | break-even configs |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        for obs in row.tau_int:
            ess = "—" if row.ess is None else f"{row.ess:.3f}"
            be = row.break_even_configs[obs]
            ratio = row.cost_ratio[obs]
            lines.append(
                f"| {Path(row.card).name} | {row.sampler} | {row.acceptance:.3f} | {ess} "
                f"| {row.train_s:.1f} | {row.seconds_per_config:.2e} | {_obs_label(row, obs)} "
                f"| {row.tau_int[obs]:.3g}{_pm(row.tau_int_err[obs])} | "
                f"{row.cost_per_indep_s[obs]:.2e} | {'—' if ratio is None else f'{ratio:.3g}'} | "
                f"{'—' if be is None else f'{be:.3g}'} |"
            )
    return "\n".join(lines)


def _pm(err: float | None) -> str:
    return "" if err is None else f" ± {err:.2g}"


def _obs_label(row: Row, obs: str) -> str:
    return f"{obs} ({row.estimator[obs]})" if row.estimator.get(obs) else obs


def write_csv(rows: Sequence[Row], path: Path) -> None:
    fields = [
        "card",
        "sampler",
        "acceptance",
        "ess",
        "train_s",
        "sample_s",
        "seconds_per_config",
        "observable",
        "tau_int",
        "tau_int_err",
        "cost_per_indep_s",
        "cost_ratio",
        "break_even_configs",
        "estimator",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        for row in rows:
            for obs in row.tau_int:
                writer.writerow(
                    {
                        "card": row.card,
                        "sampler": row.sampler,
                        "acceptance": row.acceptance,
                        "ess": row.ess,
                        "train_s": row.train_s,
                        "sample_s": row.sample_s,
                        "seconds_per_config": row.seconds_per_config,
                        "observable": obs,
                        "tau_int": row.tau_int[obs],
                        "tau_int_err": row.tau_int_err[obs],
                        "cost_per_indep_s": row.cost_per_indep_s[obs],
                        "cost_ratio": row.cost_ratio[obs],
                        "break_even_configs": row.break_even_configs[obs],
                        "estimator": row.estimator.get(obs, "chain"),
                    }
                )


def write_outputs(rows: Sequence[Row], summaries: Sequence[Summary], out_dir: Path) -> list[Path]:
    """``compare.md``, ``compare.csv``, ``compare.json`` and the figures in ``out_dir``."""
    from observables.compare_plots import plot_cost, plot_observable_comparison

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(markdown_table(rows) + "\n")
    write_csv(rows, out_dir / "compare.csv")
    (out_dir / "compare.json").write_text(json.dumps(compare_json(rows), indent=1) + "\n")
    labels = [f"{r.sampler} ({Path(r.card).stem})" for r in rows if not r.estimator]
    figures = [
        plot_observable_comparison(
            name,
            labels,
            [s.series[name] for s in summaries],
            [s.results[name] for s in summaries],
            out_dir / f"compare_{name}.png",
        )
        for name in summaries[0].results
    ]
    cost = {obs: [r.cost_per_indep_s[obs] for r in rows] for obs in rows[0].tau_int}
    every_label = [f"{r.sampler} ({Path(r.card).stem})" for r in rows]
    figures.append(plot_cost(every_label, cost, out_dir / "compare_cost.png"))
    return figures


def compare_json(rows: Sequence[Row]) -> dict[str, Any]:
    return {"rows": [r.to_json() for r in rows]}


def _file_timing(path: Path) -> dict[str, float]:
    """Cumulative timing recorded in a replica file's attributes (absent while it is being written)."""
    import h5py

    keys = ("train_s", "therm_s", "sample_s", "train_cpu_s", "therm_cpu_s", "sample_cpu_s")
    with h5py.File(path, "r") as f:
        return {k: float(f.attrs[k]) for k in keys if k in f.attrs}


def _costs(timing: dict[str, float], clock: str, path: str) -> tuple[float, float]:
    """(training, sampling) seconds of one card on ``clock``."""
    if clock == "wall":
        return timing["train_s"], timing["sample_s"]
    return timing["train_cpu_s"], timing["sample_cpu_s"]


def run_compare(
    paths: Sequence[str],
    overrides: list[str],
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    S: float = 1.5,
    clock: str = "wall",
) -> tuple[list[Row], list[Summary]]:
    """Generate (or, with ``resume``, reuse and extend) each card's ensemble, then measure and compare;
    costs in seconds of ``clock`` ("wall" or "cpu", module docstring)."""
    from mcmc.job import sample_replica
    from mcmc.runtime import World
    from mcmc.setup import job_plan

    plans = [job_plan(card) for card in load_cards(paths, overrides)]  # every card checked before any run
    raw, summaries = [], []
    for path, plan in zip(paths, plans, strict=True):
        outcome = sample_replica(plan, World(), resume=resume, overwrite=overwrite, progress=progress)
        timing = dict(outcome.timing)
        timing.update(_file_timing(outcome.path))
        summary = summarize_files([outcome.path], S=S, timing=timing)
        summaries.append(summary)
        raw.append(_row(path, summary, *_costs(timing, clock, path)))
        best = _best_row(raw[-1], summary)
        if best is not None:
            raw.append(best)
    return build_rows(raw), summaries

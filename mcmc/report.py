"""Measure replica files and report: the Gamma-method table, plots and the ``--json`` summary."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lattice.theories import theory_from_params
from mcmc.io.ensemble import Ensemble, read_ensemble
from mcmc.io.store import StoreError
from observables.estimators import ess
from observables.flow_checks import FlowChecks, flow_checks
from observables.measure import format_table, format_value, summarize, summary_json

log = logging.getLogger("latflow")


@dataclass(frozen=True)
class Summary:
    """Everything ``latflow run``/``measure`` reports about one ensemble (all replicas merged)."""

    theory: Mapping[str, Any]
    sampler: str
    n_configs: int
    n_replicas: int
    acceptance: float
    ess: float | None
    results: Mapping[str, Any]
    series: Mapping[str, list[np.ndarray]]
    timing: Mapping[str, float] = field(default_factory=dict)
    accepted: tuple[np.ndarray, ...] = ()  # per replica, (N, B) booleans: the accept/reject history
    flow: FlowChecks | None = None  # flow ensembles: reweighted estimate, Pareto k̂, sticky check

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md summary object, with ``reweighted`` ({name: {mean, err}}, null without proposal
        observables), ``pareto_k``, ``agree`` (chain and reweighted within 3σ) and ``warnings``."""
        return {
            "theory": dict(self.theory),
            "sampler": self.sampler,
            "n_configs": self.n_configs,
            "n_replicas": self.n_replicas,
            "acceptance": self.acceptance,
            "ess": self.ess,
            "observables": summary_json(self.results),
            "timing": dict(self.timing),
            **_flow_json(self.flow),
        }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _flow_json(checks: FlowChecks | None) -> dict[str, Any]:
    if checks is None:
        return {"reweighted": None, "pareto_k": None, "agree": None, "warnings": []}
    rw = {k: {"mean": r.mean, "err": r.err, "z": _finite(checks.z.get(k, math.nan))}
          for k, r in checks.reweighted.items()}
    return {"reweighted": rw or None, "pareto_k": _finite(checks.pareto.k), "agree": checks.agree,
            "warnings": list(checks.warnings)}


def _chains(values: np.ndarray) -> list[np.ndarray]:
    """Split an ``(N, B)`` dataset into B replicas of shape ``(N,)``."""
    return [np.asarray(values[:, b], dtype=np.float64) for b in range(values.shape[1])]


def _consistent(ensembles: Sequence[Ensemble]) -> None:
    """Replicas of one ensemble, each once (by its stored ``ensemble_id``, whatever its path); an
    unfinished file (a live or killed run) is measured with a warning."""
    first, seen = ensembles[0], {}
    for e in ensembles:
        identity = str(e.attrs.get("ensemble_id", e.path))
        if identity in seen:
            raise StoreError(
                f"{e.path}: the same replica as {seen[identity]} (ensemble_id {identity!r}); "
                "each replica may be measured only once"
            )
        seen[identity] = e.path
        if e.attrs.get("status") != "complete":
            log.warning(
                "warning: %s is unfinished (status %r: a live or killed run); measuring its %d stored "
                "configurations", e.path, e.attrs.get("status"), len(e.traj)
            )
    for e in ensembles[1:]:
        if e.theory != first.theory or e.attrs.get("sampler") != first.attrs.get("sampler"):
            raise StoreError(
                f"{e.path}: theory or sampler differs from {first.path}; not replicas of one ensemble"
            )


def summarize_files(
    paths: Sequence[str | Path], S: float = 1.5, timing: Mapping[str, float] | None = None
) -> Summary:
    """Merge replica files (and the chains inside each) with the multi-replica Gamma method."""
    ensembles = [read_ensemble(p) for p in paths]
    _consistent(ensembles)
    if any(len(e.traj) == 0 for e in ensembles):
        empty = next(e.path for e in ensembles if len(e.traj) == 0)
        raise StoreError(f"{empty}: holds no configurations")
    names = list(ensembles[0].obs)
    series = {name: [c for e in ensembles for c in _chains(e.obs[name])] for name in names}
    sampler = str(ensembles[0].attrs.get("sampler", ""))
    # a local sweep's ``accepted`` only says that some site moved; its rate of accepted site updates
    # is ``accept_prob``. HMC and the flow report the fraction of accepted proposals.
    rate = "accept_prob" if sampler == "local" else "accepted"
    accepted = np.concatenate([getattr(e, rate).ravel() for e in ensembles]).astype(np.float64)
    logw = np.concatenate([e.proposal_logw.ravel() for e in ensembles])
    finite = logw[np.isfinite(logw)]
    # in-stream groups of the card's ``measure:`` section (obs/<group>:<primary>) report like measure --obs
    from mcmc.measurement import stream_results

    series, measured = stream_results(series, ensembles[0].theory, str(ensembles[0].attrs.get("card", "")), S)
    results = {**summarize(series, S=S), **{k: v for k, v in measured.items() if k not in series}}
    checks = None
    if sampler == "flow" and finite.size:
        checks = flow_checks(results, series, [e.proposal_obs for e in ensembles],
                             [e.proposal_logw for e in ensembles], [e.accepted for e in ensembles])
    return Summary(
        theory=ensembles[0].theory,
        sampler=sampler,
        n_configs=int(sum(e.accepted.size for e in ensembles)),
        n_replicas=len(ensembles),
        acceptance=float(accepted.mean()),
        ess=float(ess(finite)) if finite.size else None,
        results=results,
        series=series,
        timing=dict(timing or {}),
        accepted=tuple(e.accepted for e in ensembles),
        flow=checks,
    )


def render(summary: Summary) -> str:
    """The human-readable report printed by ``run`` and ``measure``."""
    head = (
        f"{summary.theory.get('name')} {summary.theory} | sampler {summary.sampler} | "
        f"{summary.n_configs} configurations in {summary.n_replicas} replica(s)\n"
        f"acceptance {summary.acceptance:.4f}"
        + (f" | ESS {summary.ess:.4f}" if summary.ess is not None else "")
    )
    timing = " | ".join(f"{k} {v:.2f}" for k, v in summary.timing.items())
    return "\n".join(
        [head, format_table(summary.results), *_flow_lines(summary)]
        + ([f"timing (s): {timing}"] if timing else [])
    )


def _flow_lines(summary: Summary) -> list[str]:
    """The reweighted estimate beside the chain's, the agreement line, k̂ and the warnings."""
    checks = summary.flow
    if checks is None:
        return []
    lines = []
    if checks.reweighted:
        n = next(iter(checks.reweighted.values())).n
        lines.append(f"reweighted over all {n} proposals (Σ w O / Σ w, blocked jackknife), beside the chain:")
        width = max(len(k) for k in checks.reweighted)
        for name, rw in checks.reweighted.items():
            c = summary.results[name]
            lines.append(f"  {name.ljust(width)}  chain {format_value(c.mean, c.err):>14}  "
                         f"reweighted {format_value(rw.mean, rw.err):>14}  ({checks.z[name]:.1f}σ)")
        lines.append(checks.agreement_line())
    k = checks.pareto.k
    lines.append(f"Pareto k̂ {k:.2f} of the proposal weights (< 0.5 reliable, 0.5-0.7 slow, > 0.7 unreliable)"
                 if math.isfinite(k) else "Pareto k̂ not available (too few proposals)")
    lines += [f"warning: {w}" for w in checks.warnings if not w.startswith("chain and reweighted")]
    return lines


def write_plots(summary: Summary, out_dir: str | Path) -> list[Path]:
    """Figures in ``out_dir``: one four-panel figure per observable (history, ρ(t), τ_int(W), histogram);
    for HMC and the flow the accept/reject history (``accept_history.png``, first replica); for gauge
    theories with a 2D charge the Q history and the Q histogram (``Q_history.png``, ``Q_histogram.png``,
    the exact 2D U(1) distribution overlaid)."""
    from observables.plots import plot_accept_history, plot_observable_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        Path(plot_observable_report(name, summary.series[name], result, out_dir))
        for name, result in summary.results.items()
        if name in summary.series  # derived quantities (measure --obs) have no series of their own
    ]
    if summary.sampler in ("hmc", "flow") and summary.accepted:
        paths.append(Path(plot_accept_history(summary.accepted[0], out_dir / "accept_history.png")))
    if "Q" in summary.series:
        paths += _charge_plots(summary, out_dir)
    return paths


def _charge_plots(summary: Summary, out_dir: Path) -> list[Path]:
    from observables.topology import plot_charge_histogram, plot_charge_history

    charges = summary.series["Q"]
    try:  # a theory not registered in this process has no exact reference
        reference = getattr(theory_from_params(summary.theory), "exact_charge_distribution", None)
    except (ValueError, TypeError):
        reference = None
    exact = reference() if reference is not None else None
    return [
        Path(plot_charge_history(charges, out_dir / "Q_history.png")),
        Path(plot_charge_histogram(charges, out_dir / "Q_histogram.png", exact=exact)),
    ]


def json_line(summary: Summary) -> str:
    return json.dumps(summary.to_json(), allow_nan=False, default=float)

"""Gamma-method summaries of many observables: result records, the ``--json`` block and a text table.

``summarize`` runs :func:`observables.gamma.gamma_analysis` on every series of a mapping such as the
HDF5 group ``obs/`` (each dataset of shape ``(N, B)`` for B chains, or a list of replicas);
``summary_json`` turns the results into the ``"observables"`` object of the DESIGN.md ``--json`` line;
``format_table`` prints them for humans, with the compact ``0.7412(31)`` notation beside the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from numpy.typing import ArrayLike

from observables.gamma import GammaResult, format_value, gamma_analysis

JSON_KEYS = ("mean", "err", "tau_int", "tau_int_err")


def summarize(
    series: Mapping[str, ArrayLike | Sequence[ArrayLike]], S: float = 1.5, *, replica_means: bool = False
) -> dict[str, GammaResult]:
    """Gamma-method analysis of each observable, in the mapping's order.

    ``series[name]``: a 1-D array ``(N,)``, an array ``(N, R)`` of R replicas/chains, or a list of
    replicas ``(N_r,)``. ``S`` and ``replica_means`` are passed to ``gamma_analysis``.
    """
    return {name: gamma_analysis(data, S, replica_means=replica_means) for name, data in series.items()}


def summary_json(results: Mapping[str, GammaResult]) -> dict[str, dict[str, float]]:
    """``{name: {"mean", "err", "tau_int", "tau_int_err"}}`` with plain floats (the ``--json`` format).

    τ_int is in units of stored configurations, so that N_eff = N / (2 τ_int).
    """
    return {name: {key: float(getattr(res, key)) for key in JSON_KEYS} for name, res in results.items()}


def _num(x: float) -> str:
    """A number for a table cell: 6 significant figures."""
    return f"{x:.6g}"


def format_table(results: Mapping[str, GammaResult], extra: Mapping[str, object] | None = None) -> str:
    """Plain-text table: observable | mean | err | tau_int | tau_int_err | value (``0.7412(31)`` form).

    ``extra``: optional ``{label: value}`` lines printed below the table (e.g. acceptance, ESS, timing);
    floats are printed with 6 significant figures. Returns the table without a trailing newline.
    """
    header = ("observable", "mean", "err", "tau_int", "tau_int_err", "value")
    rows = [
        (name, _num(r.mean), _num(r.err), _num(r.tau_int), _num(r.tau_int_err), format_value(r.mean, r.err))
        for name, r in results.items()
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    for label, value in (extra or {}).items():
        shown = _num(value) if isinstance(value, float) else str(value)
        out.append(f"{label}: {shown}")
    return "\n".join(out)

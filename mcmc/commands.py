"""The handlers of the ``latflow`` subcommands (DESIGN.md, "Command line"): one ``cmd_<name>(args)`` per
subcommand, taking the parsed ``argparse.Namespace`` of ``mcmc.cli.parser`` and returning the exit status.

Errors the user can fix are raised (``UserError`` and the library's own one-line errors); ``mcmc.cli.main``
prints them as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

log = logging.getLogger("latflow")

INTERRUPTED = 128 + 15  # a run stopped by a signal, with its checkpoint written


class UserError(Exception):
    """Any error that is the user's to fix; printed without a traceback."""


class _LazyFileHandler(logging.FileHandler):
    """A log file created (with its directory) at the first line, so that a run refused before it
    starts leaves nothing behind; every line is flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self._path = path
        super().__init__(path, delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)
        self.flush()


def _setup_logging(quiet: bool, log_file: Path | None = None) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("latflow: %(message)s"))
        log.addHandler(console)
    if log_file is not None:
        fh = _LazyFileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)


def _load(args: argparse.Namespace, train: bool = False):  # noqa: ANN202
    """The job plan of the card (``mcmc.setup``; ``train``: of ``latflow train``) and this process's world."""
    from mcmc.card import load_card
    from mcmc.setup import job_plan

    plan = job_plan(load_card(args.card, args.overrides), train=train)
    from mcmc.parallel import detect_world

    world = detect_world()
    _setup_logging(args.quiet or world.rank != 0, Path(plan.out) / f"{plan.ensemble}.r{world.rank}.log")
    return plan, world


def cmd_train(args: argparse.Namespace) -> int:
    from mcmc.training import train_only

    plan, world = _load(args, train=True)
    if not train_only(plan, world, resume=args.resume, progress=not args.quiet and world.rank == 0):
        print("latflow: interrupted; training checkpoint written, continue with --resume", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    return 0


def _sample(args: argparse.Namespace):  # noqa: ANN202
    from mcmc.job import sample_replica
    from mcmc.parallel import any_rank

    plan, world = _load(args)
    t0 = time.perf_counter()
    outcome = sample_replica(
        plan, world, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet and world.rank == 0
    )
    if any_rank(world, outcome.interrupted):  # every rank stops when any rank was asked to
        print(
            f"latflow: interrupted; checkpoint written, continue with --resume ({outcome.path})",
            file=sys.stderr,
        )
        raise SystemExit(INTERRUPTED)
    return plan, world, outcome, time.perf_counter() - t0


def cmd_sample(args: argparse.Namespace) -> int:
    _, world, outcome, _ = _sample(args)
    sample_s = outcome.timing["sample_s"]
    if math.isnan(outcome.acceptance):  # a resumed ensemble that already held every configuration
        print(f"{outcome.path}: complete, nothing to sample")
    else:
        print(f"wrote {outcome.path} (acceptance {outcome.acceptance:.4f}, sampling {sample_s:.1f} s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mcmc.parallel import gather_timing, replica_files
    from mcmc.report import json_line, render, summarize_files, write_plots

    plan, world, outcome, _ = _sample(args)
    timing = gather_timing(world, outcome.timing)
    files = replica_files(plan.out, plan.ensemble, world)  # every rank: it ends with a barrier
    if world.rank != 0:
        return 0
    summary = summarize_files(files, S=args.S, timing=timing)
    print(render(summary))
    if not args.no_plots:
        plots = write_plots(summary, Path(plan.out) / "plots")
        print(f"plots: {Path(plan.out) / 'plots'} ({len(plots)} files)")
    if args.json:
        print(json_line(summary))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from mcmc.report import json_line, render, summarize_files, write_plots

    _setup_logging(False)
    names = [n.strip() for item in args.obs for n in item.split(",") if n.strip()]
    if (args.overrides or args.pyerrors) and not names:
        raise UserError("--set and --pyerrors need --obs")
    if names:
        from mcmc.parallel import detect_world

        world = detect_world()
        summary = _measure_obs(args, names, world)
        if summary is None:  # not rank 0
            return 0
    else:
        summary = summarize_files(args.files, S=args.S)
    print(render(summary))
    if args.plots:
        write_plots(summary, args.plots)
    if args.json:
        print(json_line(summary))
    return 0


def _measure_obs(args: argparse.Namespace, names: list[str], world):  # noqa: ANN001, ANN202
    """``measure --obs``: measure (resuming, reusing, MPI-split), then the summary with every result."""
    import dataclasses

    from mcmc.measurement import analyze, measure_files, parse_sets, plans
    from mcmc.report import summarize_files

    if str(Path.cwd()) not in sys.path:  # user observables: module:function importable from here
        sys.path.insert(0, str(Path.cwd()))
    measured = measure_files(args.files, names, parse_sets(args.overrides), world, progress=not args.quiet)
    if world.rank != 0:
        return None
    summary = summarize_files(args.files, S=args.S)
    results, direct = analyze(measured, S=args.S)
    if args.pyerrors:
        from observables.export import dump, to_pyerrors

        obs = {}
        try:
            for group, plan in plans(measured).items():
                series, names_ = measured.series[group], measured.replica_names
                obs.update(to_pyerrors(plan.direct, series, plan.derived, names_))
            written = dump(obs, args.pyerrors, description=f"latflow measure {' '.join(names)}")
        except ImportError as exc:
            raise UserError(str(exc)) from None
        print(f"wrote {written} ({len(obs)} observables)", file=sys.stderr)
    return dataclasses.replace(
        summary, results={**summary.results, **results}, series={**summary.series, **direct}
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from mcmc.io.verify import unchecked, verify_file

    failed = 0
    for path in args.files:
        problems = verify_file(path)
        failed += bool(problems)
        print(f"{'OK  ' if not problems else 'FAIL'} {path}")
        for problem in problems:
            print(f"     {problem}")
        for note in unchecked(path):
            print(f"     note: {note}")
    return 1 if failed else 0


def cmd_export_nersc(args: argparse.Namespace) -> int:
    from mcmc.io.nersc import export_from_ensemble

    header = export_from_ensemble(
        args.ensemble,
        args.out,
        index=args.index,
        chain=args.chain,
        storage=args.storage,
        precision=args.precision,
    )
    print(f"wrote {args.out} ({header['DATATYPE']}, plaquette {header['PLAQUETTE']})")
    return 0


def cmd_export_ildg(args: argparse.Namespace) -> int:
    from mcmc.io.ildg import export_from_ensemble

    out = export_from_ensemble(args.ensemble, args.out, index=args.index, chain=args.chain,
                               precision=args.precision)
    print(f"wrote {out} (ILDG su3gauge, {args.precision}-bit)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from mcmc.compare import compare_json, markdown_table, run_compare, write_outputs

    _setup_logging(args.quiet)
    if args.resume and args.overwrite:
        from mcmc.resume import BOTH_FLAGS

        raise UserError(BOTH_FLAGS)
    rows, summaries = run_compare(
        args.cards,
        args.overrides,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        S=args.S,
        clock=args.clock,
    )
    figures = write_outputs(rows, summaries, Path(args.out))
    print(markdown_table(rows))
    print(f"wrote {Path(args.out)}/compare.md, compare.csv, compare.json and {len(figures)} figures")
    if args.json:
        print(json.dumps(compare_json(rows), allow_nan=False, default=float))
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "run": cmd_run,
    "measure": cmd_measure,
    "verify": cmd_verify,
    "export-nersc": cmd_export_nersc,
    "export-ildg": cmd_export_ildg,
    "compare": cmd_compare,
}

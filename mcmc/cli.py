"""The ``latflow`` command line (DESIGN.md, "Command line").

Errors the user can fix (a bad card, a missing file, an existing ensemble, a damaged file) are
printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import traceback
import typing
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("latflow")

EXIT_USAGE = 2
INTERRUPTED = 128 + 15  # a run stopped by a signal, with its checkpoint written


class UserError(Exception):
    """Any error that is the user's to fix; printed without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``latflow <command>: error: ...``), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def window_S(text: str) -> float:
    """``--S``: the Gamma-method window parameter, a finite number > 0 (checked when parsed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


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


def _set_arg(p: argparse.ArgumentParser, metavar: str, text: str) -> None:
    """The repeatable ``--set`` option, collected into ``overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar=metavar, help=text)


def _card_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("card", help="run card (YAML)")
    _set_arg(p, "KEY=VALUE", "override a card key in dotted form, e.g. sample.n_configs=20000 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="latflow", description="Lattice field theory sampling with flows and HMC."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fit a flow and save its checkpoint")
    _card_args(train)
    train.add_argument("--resume", action="store_true", help="continue training from the checkpoint")
    for name, text in (
        ("sample", "generate an ensemble"),
        ("run", "train if needed, sample, measure, report"),
    ):
        p = sub.add_parser(name, help=text)
        _card_args(p)
        p.add_argument("--resume", action="store_true", help="continue an interrupted or shorter ensemble")
        p.add_argument("--overwrite", action="store_true", help="replace an existing ensemble")
        if name == "run":
            p.add_argument("--json", action="store_true", help="print the JSON summary as the last line")
            p.add_argument("--no-plots", action="store_true", help="skip the plots")
            p.add_argument(
                "--S", type=window_S, default=1.5, help="Gamma-method window parameter (default 1.5)"
            )
    meas = sub.add_parser("measure", help="observables with Gamma-method errors from replica files")
    meas.add_argument("files", nargs="+", help="replica files <ensemble>.r<rank>.h5 of one ensemble")
    meas.add_argument("--json", action="store_true", help="print the JSON summary as the last line")
    meas.add_argument("--S", type=window_S, default=1.5, help="Gamma-method window parameter (default 1.5)")
    meas.add_argument("--plots", metavar="DIR", help="write the observable plots into DIR")
    meas.add_argument(
        "--obs",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help="measure on the stored configurations: correlators, wilson_loops, polyakov_corr, "
        "gradient_flow or module:function (repeatable); results go to <ensemble>.r<rank>.meas.h5",
    )
    _set_arg(meas, "GROUP.KEY=VALUE",
             "a parameter of a measured group, e.g. gradient_flow.t_max=3.5 (repeatable)")
    meas.add_argument(
        "--pyerrors", metavar="FILE.json.gz", help="write every reported quantity as a pyerrors Obs"
    )
    meas.add_argument("--quiet", action="store_true", help="no progress bars")
    cmp = sub.add_parser("compare", help="several samplers on one theory, side by side: table, CSV, plots")
    cmp.add_argument("cards", nargs="+", help="run cards of one theory (the first is the reference)")
    _set_arg(cmp, "KEY=VALUE", "override a key in every card, e.g. sample.n_configs=5000 (repeatable)")
    cmp.add_argument(
        "--out", default="runs/out/compare", help="directory for compare.md/.csv/.json and plots"
    )
    cmp.add_argument("--resume", action="store_true", help="reuse and extend existing ensembles")
    cmp.add_argument("--overwrite", action="store_true", help="regenerate existing ensembles")
    cmp.add_argument("--json", action="store_true", help="print the JSON rows as the last line")
    cmp.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    cmp.add_argument("--S", type=window_S, default=1.5, help="Gamma-method window parameter (default 1.5)")
    cmp.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cost in wall-clock seconds (default) or in the CPU seconds of each run's process, which "
        "other jobs on a shared machine do not inflate (CPU runs only)",
    )
    ver = sub.add_parser("verify", help="checksums, provenance and continuity of replica files")
    ver.add_argument("files", nargs="+")
    nersc = sub.add_parser("export-nersc", help="write one SU(3) 4D configuration in the NERSC format")
    nersc.add_argument("ensemble", help="replica file <ensemble>.r<rank>.h5")
    nersc.add_argument("out", help="output file (NERSC gauge configuration)")
    nersc.add_argument("--index", type=int, default=-1, help="stored configuration (default: the last)")
    nersc.add_argument("--chain", type=int, default=0, help="chain within the configuration (default 0)")
    nersc.add_argument("--storage", choices=("3x3", "3x2"), default="3x3", help="matrix rows stored")
    nersc.add_argument("--precision", choices=("double", "single"), default="double", help="IEEE64 or 32")
    ildg = sub.add_parser("export-ildg", help="write one SU(3) 4D configuration in the ILDG (LIME) format")
    ildg.add_argument("ensemble", help="replica file <ensemble>.r<rank>.h5")
    ildg.add_argument("out", help="output file (ILDG gauge configuration)")
    ildg.add_argument("--index", type=int, default=-1, help="stored configuration (default: the last)")
    ildg.add_argument("--chain", type=int, default=0, help="chain within the configuration (default 0)")
    ildg.add_argument("--precision", type=int, choices=(64, 32), default=64, help="IEEE float bits")
    return ap


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


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix: printed as one line, exit status 2."""
    from flows.checkpoint import CheckpointMismatch
    from mcmc.card import CardError
    from mcmc.io.ildg import IldgError
    from mcmc.io.lock import LockError
    from mcmc.io.nersc import NerscError
    from mcmc.io.store import StoreError
    from mcmc.kernels.local.common import LocalKernelError
    from mcmc.runtime import JobError
    from observables.groups import GroupError

    return (UserError, CardError, JobError, LockError, StoreError, NerscError, GroupError, IldgError,
            FileNotFoundError, LocalKernelError, CheckpointMismatch)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latflow`` console script."""
    # OpenMP threads that spin while waiting make small tensor work many times slower on a shared
    # machine; this must be set before torch is first imported (the commands import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as exc:
        print(f"latflow {args.command}: error: {exc}", file=sys.stderr)
        _abort_peers(EXIT_USAGE)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"latflow {args.command}: interrupted", file=sys.stderr)
        _abort_peers(130)
        return 130
    except Exception:
        if _abort_peers(1, dry=True):
            traceback.print_exc()
            _abort_peers(1)
        raise


def _abort_peers(code: int, dry: bool = False) -> bool:
    """Under MPI with several ranks, end the whole job with ``code`` (a rank failing alone would leave
    the others waiting in a collective); ``dry``: only tell whether that would happen."""
    if "mcmc.parallel" not in sys.modules:  # MPI was never set up by this command
        return False
    from mcmc.parallel import abort, in_parallel

    if not dry:
        abort(code)
    return in_parallel()


if __name__ == "__main__":
    sys.exit(main())

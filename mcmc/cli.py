"""The ``latflow`` command line (DESIGN.md, "Command line"): the argument parser and the entry point;
the subcommand handlers are ``mcmc.commands``.

Errors the user can fix (a bad card, a missing file, an existing ensemble, a damaged file) are
printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
import typing
from collections.abc import Sequence

from mcmc.commands import COMMANDS, UserError

EXIT_USAGE = 2


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


def _set_arg(p: argparse.ArgumentParser, metavar: str, text: str) -> None:
    """The repeatable ``--set`` option, collected into ``overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar=metavar, help=text)


def _card_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("card", help="run card (YAML)")
    _set_arg(p, "KEY=VALUE", "override a card key in dotted form, e.g. sample.n_configs=20000 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def _window_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--S", type=window_S, default=1.5, help="Gamma-method window parameter (default 1.5)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="fit a flow and save its checkpoint")
    _card_args(train)
    train.add_argument("--resume", action="store_true", help="continue training from the checkpoint")


def _add_sample_and_run(sub: argparse._SubParsersAction) -> None:
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
            _window_arg(p)


def _add_measure(sub: argparse._SubParsersAction) -> None:
    meas = sub.add_parser("measure", help="observables with Gamma-method errors from replica files")
    meas.add_argument("files", nargs="+", help="replica files <ensemble>.r<rank>.h5 of one ensemble")
    meas.add_argument("--json", action="store_true", help="print the JSON summary as the last line")
    _window_arg(meas)
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


def _add_compare(sub: argparse._SubParsersAction) -> None:
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
    _window_arg(cmp)
    cmp.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cost in wall-clock seconds (default) or in the CPU seconds of each run's process, which "
        "other jobs on a shared machine do not inflate (CPU runs only)",
    )


def _export_args(p: argparse.ArgumentParser, fmt: str) -> None:
    """The arguments the NERSC and ILDG exporters share: which stored configuration goes where."""
    p.add_argument("ensemble", help="replica file <ensemble>.r<rank>.h5")
    p.add_argument("out", help=f"output file ({fmt} gauge configuration)")
    p.add_argument("--index", type=int, default=-1, help="stored configuration (default: the last)")
    p.add_argument("--chain", type=int, default=0, help="chain within the configuration (default 0)")


def _add_files(sub: argparse._SubParsersAction) -> None:
    ver = sub.add_parser("verify", help="checksums, provenance and continuity of replica files")
    ver.add_argument("files", nargs="+")
    nersc = sub.add_parser("export-nersc", help="write one SU(3) 4D configuration in the NERSC format")
    _export_args(nersc, "NERSC")
    nersc.add_argument("--storage", choices=("3x3", "3x2"), default="3x3", help="matrix rows stored")
    nersc.add_argument("--precision", choices=("double", "single"), default="double", help="IEEE64 or 32")
    ildg = sub.add_parser("export-ildg", help="write one SU(3) 4D configuration in the ILDG (LIME) format")
    _export_args(ildg, "ILDG")
    ildg.add_argument("--precision", type=int, choices=(64, 32), default=64, help="IEEE float bits")


def parser() -> argparse.ArgumentParser:
    """The ``latflow`` argument parser, one subparser per entry of ``mcmc.commands.COMMANDS``."""
    ap = _Parser(
        prog="latflow", description="Lattice field theory sampling with flows and HMC."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_sample_and_run, _add_measure, _add_compare, _add_files):
        add(sub)
    return ap


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

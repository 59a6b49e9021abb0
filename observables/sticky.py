r"""Errors of sticky chains: independence-Metropolis chains with long rejection runs.

A flow chain that reaches a configuration of unusually large weight w = p̃/q stays there until a
proposal of comparable weight comes: a rejection run. The Gamma method's automatic window W (Wolff
2004, eq. 52) is usually shorter than the longest such run. The check here compares its error with
a binning (blocking) analysis whose blocks are ``BLOCK_FACTOR`` times the longest rejection run, so that
every run sits inside a block and block means are nearly independent:

    σ²_block = Var(block means) / n_blocks,   block means over b consecutive configurations per chain,

pooled over chains (the variance is taken about the overall mean, with n_blocks − 1 degrees of
freedom). With n_blocks blocks its relative error is about 1/sqrt(2(n_blocks − 1)), so the check needs
at least ``MIN_BLOCKS`` blocks and reports a discrepancy only beyond ``RATIO`` (about 2σ of that noise
for 10 blocks). When the chains are too short for such blocks, that itself is reported: the longest
run is then a sizeable fraction of the chain, and no error estimate of the chain can be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_FACTOR = 10
MIN_BLOCKS = 10
RATIO = 1.5


def longest_rejection_run(accepted: np.ndarray) -> int:
    """The longest run of consecutive rejections in any chain of ``accepted (N, B)`` (or ``(N,)``)."""
    acc = np.asarray(accepted, dtype=bool).reshape(len(accepted), -1)
    best = 0
    for col in acc.T:
        edges = np.flatnonzero(np.diff(np.concatenate([[1], col.astype(np.int8), [1]])) != 0)
        if edges.size:
            best = max(best, int(np.max(edges[1::2] - edges[::2])))
    return best


def blocked_error(replicas: Sequence[np.ndarray], block: int) -> tuple[float, int]:
    """Binning error of the mean of ``replicas`` (each ``(N_r,)``) with blocks of ``block`` consecutive
    values; returns ``(error, n_blocks)`` (NaN error below 2 blocks). Trailing partial blocks are
    dropped."""
    means = []
    for a in replicas:
        a = np.asarray(a, dtype=np.float64)
        nb = a.size // block
        if nb:
            means.append(a[: nb * block].reshape(nb, block).mean(axis=1))
    m = np.concatenate(means) if means else np.empty(0)
    if m.size < 2:
        return float("nan"), int(m.size)
    return float(m.std(ddof=1) / np.sqrt(m.size)), int(m.size)


@dataclass(frozen=True)
class StickyCheck:
    """Outcome of :func:`check_sticky`: the longest rejection run, the block length used, the ratio
    blocked error / Gamma error of each observable (empty when too few blocks), and a warning line."""

    longest_run: int
    block: int
    ratios: Mapping[str, float]
    warning: str | None


def check_sticky(
    series: Mapping[str, Sequence[np.ndarray]],
    gamma_errors: Mapping[str, float],
    accepted: Sequence[np.ndarray],
) -> StickyCheck:
    """Compare Gamma errors with blocking over blocks of ``BLOCK_FACTOR`` × the longest rejection run.

    ``series[name]``: the chains of one observable, each ``(N_r,)``; ``gamma_errors[name]``: its Gamma
    error; ``accepted``: per replica, the ``(N, B)`` accept history of the same chains.
    """
    longest = max((longest_rejection_run(a) for a in accepted if len(a)), default=0)
    block = max(1, BLOCK_FACTOR * longest)
    ratios: dict[str, float] = {}
    n_blocks = 0
    for name, reps in series.items():
        err, n_blocks = blocked_error(reps, block)
        if n_blocks >= MIN_BLOCKS and gamma_errors.get(name, 0) > 0:
            ratios[name] = err / gamma_errors[name]
    if longest and n_blocks < MIN_BLOCKS:
        return StickyCheck(longest, block, {}, (
            f"sticky chain: the longest rejection run is {longest} updates, too long for this ensemble to "
            f"check its errors by blocking ({n_blocks} blocks of {block}); chain errors are unreliable"))
    worst = max(ratios, key=ratios.get, default=None)
    warning = None
    if worst is not None and ratios[worst] > RATIO:
        warning = (f"sticky chain: blocking over {block} updates (10x the longest rejection run, {longest}) "
                   f"gives a {ratios[worst]:.1f}x larger error of {worst} than the Gamma window")
    return StickyCheck(longest, block, ratios, warning)

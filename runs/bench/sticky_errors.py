"""Errors of sticky independence-Metropolis chains: the Gamma window against blocking (issue 20).

A model of a flow chain in D dimensions: proposals x ~ N(0, 1)^D, target N(0, 1/(1 − 2c))^D, so
log w = c χ²_D (χ² = Σ x²) and the observable O = χ²/D has ⟨O⟩ = 1/(1 − 2c) exactly. For each c,
R chains of N updates are run; each chain's error is estimated by the Gamma method (S = 1.5), by
blocking with blocks of 10× its longest rejection run (where that leaves ≥ 10 blocks), and the
reweighted estimate over the same chain's proposals by a 50-block jackknife. The table compares
the root-mean-square estimated error with the actual spread of the means over the R chains, and the
spread of z = (mean − exact)/error (1 for honest errors). Usage:

    OMP_NUM_THREADS=1 nice python runs/bench/sticky_errors.py [seed]
"""

from __future__ import annotations

import sys

import numpy as np

from observables.estimators import ess, reweighted_mean
from observables.gamma import gamma_analysis
from observables.psis import pareto_k
from observables.sticky import blocked_error, longest_rejection_run

D, N, R = 64, 20000, 300


def chains(c: float, rng: np.random.Generator):
    chi2 = rng.chisquare(D, size=(N, R))
    logw, logu = c * chi2, np.log(rng.uniform(size=(N, R)))
    cur, cur_w = chi2[0].copy(), logw[0].copy()
    out, acc = np.empty((N, R)), np.empty((N, R), dtype=bool)
    for i in range(N):
        a = logu[i] < logw[i] - cur_w
        cur, cur_w = np.where(a, chi2[i], cur), np.where(a, logw[i], cur_w)
        out[i], acc[i] = cur, a
    return out / D, acc, logw, chi2 / D


def main(seed: int) -> None:
    rng = np.random.default_rng(seed)
    print("| c | acceptance | ESS | k̂ | spread of chain means | Gamma rms err | blocking rms err (usable) "
          "| z spread Gamma | z spread blocking | median Gamma/blocking | spread rw means | rw rms err "
          "| z spread rw |")
    print("| --- " * 13 + "|")
    for c in (0.05, 0.08, 0.12):
        obs, acc, logw, prop = chains(c, rng)
        exact = 1 / (1 - 2 * c)
        means = obs.mean(axis=0)
        gamma = np.array([gamma_analysis(obs[:, r]).err for r in range(R)])
        runs = np.array([longest_rejection_run(acc[:, r]) for r in range(R)])
        block = np.array([blocked_error([obs[:, r]], 10 * L) for r, L in enumerate(runs)])
        berr = np.where(block[:, 1] >= 10, block[:, 0], np.nan)
        rw = [reweighted_mean(prop[:, r], logw[:, r], n_bins=50) for r in range(R)]
        rmean, rerr = np.array([x.mean for x in rw]), np.array([x.err for x in rw])
        print(f"| {c} | {acc.mean():.3f} | {np.median([ess(logw[:, r]) for r in range(R)]):.3f} "
              f"| {np.median([pareto_k(logw[:, r]).k for r in range(R)]):.2f} | {means.std(ddof=1):.3g} "
              f"| {np.sqrt(np.mean(gamma**2)):.3g} | {np.sqrt(np.nanmean(berr**2)):.3g} "
              f"({np.isfinite(berr).mean():.2f}) | {((means - exact) / gamma).std():.2f} "
              f"| {np.nanstd((means - exact) / berr):.2f} | {np.nanmedian(gamma / berr):.2f} "
              f"| {rmean.std(ddof=1):.3g} | {np.sqrt(np.mean(rerr**2)):.3g} "
              f"| {((rmean - exact) / rerr).std():.2f} |",
              flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)

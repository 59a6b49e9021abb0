r"""What a flow ensemble reports beside its chain: the all-proposal reweighted estimate, its agreement
with the chain, the Pareto k̂ of the weights, and the sticky-chain check.

Every proposal x_i ~ q of an independence-Metropolis run, accepted or not, is an independent draw
from q with log weight log w_i = −S(x_i) − log q(x_i). Over all N proposals of all chains and replicas

    ⟨O⟩_rw = Σ_i w_i O(x_i) / Σ_i w_i

(self-normalised importance sampling), with a blocked-jackknife error (``reweighted_mean``; the
proposals are independent, so any block length is valid). The chain estimate uses the same
proposals, so the two are positively correlated; ``z = |Ō_chain − ⟨O⟩_rw| / sqrt(σ²_chain + σ²_rw)``
ignores that correlation and is therefore conservative: the two agree when every |z| < ``Z_AGREE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from observables.estimators import ReweightedResult, reweighted_mean
from observables.psis import ParetoK, pareto_k
from observables.sticky import StickyCheck, check_sticky

Z_AGREE = 3.0
N_BINS = 50  # jackknife blocks of the reweighted estimate


@dataclass(frozen=True)
class FlowChecks:
    """``reweighted[name]``: the all-proposal estimate; ``z[name]``: its distance to the chain's value
    in combined standard errors; ``pareto``: k̂ of all proposal weights; ``sticky``: the blocking check
    of the chain's errors; ``warnings``: one line each (k̂, sticky chain, disagreement)."""

    reweighted: Mapping[str, ReweightedResult]
    z: Mapping[str, float]
    pareto: ParetoK
    sticky: StickyCheck | None
    warnings: tuple[str, ...]

    @property
    def agree(self) -> bool | None:
        """Whether chain and reweighted values agree within ``Z_AGREE`` σ (None without a comparison)."""
        finite = [z for z in self.z.values() if math.isfinite(z)]
        return None if not finite else max(finite) < Z_AGREE

    def agreement_line(self) -> str | None:
        """One line saying whether the chain and the reweighted values agree."""
        finite = {k: z for k, z in self.z.items() if math.isfinite(z)}
        if not finite:
            return None
        worst = max(finite, key=finite.get)
        if self.agree:
            return (f"chain and reweighted values agree: largest difference {finite[worst]:.1f}σ ({worst}), "
                    f"below {Z_AGREE:.0f}σ")
        bad = ", ".join(f"{k} {z:.1f}σ" for k, z in finite.items() if z >= Z_AGREE)
        return f"chain and reweighted values DISAGREE beyond {Z_AGREE:.0f}σ: {bad}"


def _pooled(per_replica: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, B)`` arrays of all replicas as one series: each chain in time order, then the next."""
    return np.concatenate([np.asarray(a, dtype=np.float64).T.ravel() for a in per_replica])


def flow_checks(
    chain: Mapping[str, object],
    series: Mapping[str, Sequence[np.ndarray]],
    proposal_obs: Sequence[Mapping[str, np.ndarray]],
    proposal_logw: Sequence[np.ndarray],
    accepted: Sequence[np.ndarray],
) -> FlowChecks:
    """The checks of one flow ensemble (module docstring).

    ``chain[name]``: the chain's Gamma result (``mean``, ``err``); ``series[name]``: the chain series
    per chain ``(N,)``; per replica: ``proposal_obs[r][name]`` and ``proposal_logw[r]`` of shape
    ``(N, B)``, and ``accepted[r] (N, B)``. Replicas without proposal observables give no reweighted
    estimate; k̂ is computed from the log weights alone.
    """
    logw = _pooled(proposal_logw)
    finite = np.isfinite(logw)
    pareto = pareto_k(logw[finite])
    names = [n for n in chain if proposal_obs and all(n in p for p in proposal_obs)]
    reweighted, z = {}, {}
    for name in names:
        values = _pooled([p[name] for p in proposal_obs])
        ok = finite & np.isfinite(values)
        if ok.sum() < 2:
            continue
        rw = reweighted_mean(values[ok], logw[ok], n_bins=min(N_BINS, int(ok.sum())))
        reweighted[name] = rw
        c = chain[name]
        sigma = math.hypot(float(c.err), rw.err)
        z[name] = abs(float(c.mean) - rw.mean) / sigma if sigma > 0 else math.nan
    sticky = check_sticky(series, {k: float(r.err) for k, r in chain.items()}, accepted) if accepted else None
    warnings = [w for w in (pareto.warning(), sticky.warning if sticky else None) if w]
    result = FlowChecks(reweighted, z, pareto, sticky, ())
    if result.agree is False:
        warnings.append(result.agreement_line())
    return FlowChecks(reweighted, z, pareto, sticky, tuple(warnings))

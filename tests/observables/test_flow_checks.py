"""All-proposal reweighting and the agreement of chain and reweighted values (synthetic proposals)."""

import math
from types import SimpleNamespace

import numpy as np

from observables.flow_checks import flow_checks


def _proposals(rng, n, shift=0.0):
    """Proposals O ~ N(0, 1) with weights w ∝ e^{O}: the target is N(1, 1), so ⟨O⟩ = 1."""
    o = rng.normal(size=(n, 2))
    return {"O": o + shift}, o


def test_reweighted_value_and_agreement():
    rng = np.random.default_rng(3)
    obs, logw = _proposals(rng, 20000)
    checks = flow_checks({"O": SimpleNamespace(mean=1.0, err=0.02)}, {}, [obs], [logw], [])
    rw = checks.reweighted["O"]
    assert rw.n == 40000 and abs(rw.mean - 1.0) < 4 * rw.err and rw.err < 0.02
    assert checks.agree and "agree" in checks.agreement_line()
    assert checks.pareto.k < 0.5 and checks.warnings == ()


def test_disagreement_is_a_warning():
    rng = np.random.default_rng(4)
    obs, logw = _proposals(rng, 20000)
    checks = flow_checks({"O": SimpleNamespace(mean=1.3, err=0.01)}, {}, [obs], [logw], [])
    assert checks.agree is False and checks.z["O"] > 3
    assert any("DISAGREE" in w for w in checks.warnings)


def test_heavy_weight_tail_warns_and_old_files_give_no_estimate():
    rng = np.random.default_rng(5)
    logw = np.log(rng.pareto(1 / 0.9, size=(5000, 1)) + 1)  # k = 0.9
    checks = flow_checks({"O": SimpleNamespace(mean=0.0, err=0.1)}, {}, [{}], [logw], [])
    assert checks.reweighted == {} and checks.agree is None and checks.agreement_line() is None
    assert checks.pareto.k > 0.7 and any("k̂" in w for w in checks.warnings)
    assert not math.isnan(checks.pareto.k)

"""Tests of the Gamma-method summaries, the --json block and the text table."""

import json

import numpy as np
import pytest

from observables.gamma import format_value, gamma_analysis
from observables.measure import JSON_KEYS, format_table, summarize, summary_json


@pytest.fixture
def series():
    rng = np.random.default_rng(0)
    return {
        "mag2": 0.74 + 0.01 * rng.standard_normal((400, 4)),  # (N, B) as stored in obs/<name>
        "action": [1.0 + rng.standard_normal(300), 1.0 + rng.standard_normal(200)],
        "phi2": np.full(100, 2.5),
    }


def test_summarize_runs_gamma_on_each(series):
    res = summarize(series, S=2.0)
    assert list(res) == ["mag2", "action", "phi2"]
    ref = gamma_analysis(series["mag2"], S=2.0)
    assert res["mag2"].err == ref.err and res["mag2"].S == 2.0
    assert res["mag2"].n_replicas == 4 and res["action"].n == 500
    assert res["phi2"].err == 0.0


def test_summary_json_format(series):
    block = summary_json(summarize(series))
    assert set(block) == set(series)
    for name, entry in block.items():
        assert tuple(entry) == JSON_KEYS == ("mean", "err", "tau_int", "tau_int_err")
        assert all(type(v) is float for v in entry.values()), name
    round_trip = json.loads(json.dumps({"observables": block}))
    assert round_trip["observables"]["phi2"] == {"mean": 2.5, "err": 0.0, "tau_int": 0.5, "tau_int_err": 0.0}


@pytest.mark.parametrize(
    ("mean", "err", "text"),
    [
        (0.74123, 0.00312, "0.7412(31)"),
        (-0.5, 0.05, "-0.500(50)"),
        (1.0, 0.0996, "1.00(10)"),
        (12345.6, 456.0, "12346(456)"),
        (3.14159, 0.12, "3.14(12)"),
        (3.14159, 1.2, "3.1(12)"),
        (0.1, 0.0, "0.1(0)"),
    ],
)
def test_format_value(mean, err, text):
    assert format_value(mean, err) == text


def test_format_table(series):
    res = summarize(series)
    table = format_table(res, extra={"acceptance": 0.712345678, "sampler": "hmc"})
    lines = table.splitlines()
    for col in ("observable", "mean", "err", "tau_int", "tau_int_err", "value"):
        assert col in lines[0]
    assert set(lines[1]) <= {"-", " "}
    assert [line.split()[0] for line in lines[2:5]] == ["mag2", "action", "phi2"]
    assert format_value(res["mag2"].mean, res["mag2"].err) in lines[2]
    assert lines[-2:] == ["acceptance: 0.712346", "sampler: hmc"]
    assert not table.endswith("\n")

"""Property-based fuzz of run cards: every card either runs to a complete ensemble (exit 0) or stops with
exit status 2 and one line on stderr, no traceback, and no ensemble file left behind.

Cards start from a small valid one and get one to three keys replaced by values of any type (numbers
out of range, NaN and ±Inf, strings, lists, None, huge lattices). Shapes and counts are small so that
the cards that do run take a fraction of a second; the examples are derandomized (CI runs the same
ones every time) and capped so the whole test takes well under a minute.
"""

import contextlib
import io
import math
import tempfile
from pathlib import Path

import h5py
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcmc.cli import main

BASE = {
    "theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "hmc"},
    "hmc": {"tau": 0.5, "n_steps": 2},
    "flow": {"n_layers": 2, "hidden": [4]},
    "train": {"steps": 2, "batch_size": 4},
    "sample": {"n_configs": 6, "n_therm": 2, "n_chains": 2, "progress": False},
    "seed": 1,
    "device": "cpu",
}
ANY = [None, True, "x", "", [], {}, {"a": 1}, -1, 0, 1.5, math.nan, math.inf, -math.inf]
COUNT = [-1, 0, 1, 3, 2.5, "3"]
FLOAT = [-4.0, -1.0, 0.0, 0.5, 2.0, 1e308, -1e308, 7]
VALUES = {
    "theory.name": ["phi4", "u1", "sun", "so3", 4],
    "theory.shape": [[], [1], [2, 2], [3, 4], [2, 2, 2], [0, 4], [-2, 4], ["a", 4], [2.5, 4],
                     [100000, 100000], [10**6] * 4, 4, "4x4"],
    "theory.m2": FLOAT,
    "theory.lam": FLOAT,
    "theory.beta": FLOAT,
    "theory.N": [1, 2, 3, -2, 2.5, "two"],
    "sampler.kind": ["flow", "hmc", "local", "gibbs"],
    "hmc.tau": FLOAT,
    "hmc.n_steps": COUNT,
    "hmc.integrator": ["leapfrog", "omelyan", "rk4"],
    "local.n_hits": COUNT,
    "local.step_size": FLOAT,
    "flow.n_layers": COUNT,
    "train.lr": FLOAT,
    "train.batch_size": COUNT,
    "train.grad_clip": FLOAT,
    "train.warmup_steps": COUNT,
    "flow.hidden": [[], [0], [-1], [4, 4], 4, [2.5]],
    "flow.kernel_size": COUNT + [2, 5],
    "sample.n_configs": COUNT,
    "sample.n_therm": COUNT,
    "sample.n_chains": COUNT + [10**9],
    "sample.every": COUNT,
    "seed": [-1, 0, 2**63 - 1, 2**63, 2**64, "x", 1.5],
    "dtype": ["float32", "float64", "float16", 64],
    "device": ["cpu", "auto", "tpu", 0],
}


@st.composite
def cards(draw):
    card = yaml.safe_load(yaml.safe_dump(BASE))  # a deep copy
    for key in draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3, unique=True)):
        value = draw(st.sampled_from(VALUES[key] + ANY))
        *sections, last = key.split(".")
        node = card
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return card


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(cards())
def test_every_card_runs_or_exits_2_with_one_line(card):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        path = Path(tmp) / "card.yaml"
        path.write_text(yaml.safe_dump({**card, "out": str(out)}))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", str(path), "--quiet", "--no-plots"])
        message = err.getvalue()
        files = sorted(out.glob("*.h5")) if out.exists() else []
        if code == 0:
            assert len(files) == 1
            with h5py.File(files[0]) as f:
                assert f.attrs["status"] == "complete"
        else:
            assert code == 2, (card, message)
            assert len(message.strip().splitlines()) == 1 and "Traceback" not in message, (card, message)
            assert files == [], (card, message)

"""Shared fixtures of the kernel tests: one torch thread, seeded generators, the 4σ check, a short
batched chain (HMC, local updates or a flow) with its observables and step records, the local kernels'
reproducibility and ΔS checks, a killable φ⁴ run of the ``latflow`` script, and a job that stops at the
n-th poll of its stop flag.

The helpers are handed out as fixtures (``gen``, ``within``, ``run_chain``, ``same_seed_chain``,
``sweeps_checked``, ``killable``, ``stop_after``) because the tests import in pytest's ``importlib``
mode, where a test module cannot import ``conftest``."""

import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import torch
import yaml

from mcmc.kernels.protocol import ChainState


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _within(result, exact, n_sigma=4.0):
    return abs(result.mean - exact) < n_sigma * result.err


class Chain(NamedTuple):
    """A finished run: the last ``state``; ``obs[name]`` and ``info[field]`` of each measured step,
    numpy ``(n_meas, B)`` (``obs`` from ``theory.observables``, ``info`` the ``StepInfo`` fields)."""

    state: ChainState
    obs: dict[str, np.ndarray]
    info: dict[str, np.ndarray]


def _run_chain(kernel, start, generator, n_therm, n_meas):
    """B chains of ``kernel`` started at ``start``, fields ``(B, ...)`` or a state of the kernel's own:
    ``n_therm`` unrecorded steps, then ``n_meas`` measured ones, all drawing from ``generator``."""
    state = kernel.init(start) if isinstance(start, torch.Tensor) else start
    for _ in range(n_therm):
        state, _ = kernel.step(state, generator)
    obs, info = {}, {}
    for _ in range(n_meas):
        state, step = kernel.step(state, generator)
        for name, value in kernel.theory.observables(state.x).items():
            obs.setdefault(name, []).append(value.numpy())
        for field in fields(step):
            value = getattr(step, field.name)
            if isinstance(value, torch.Tensor):
                info.setdefault(field.name, []).append(value.numpy())
    return Chain(state, {k: np.stack(v) for k, v in obs.items()}, {k: np.stack(v) for k, v in info.items()})


@pytest.fixture
def gen():
    """``gen(seed)``: a fresh CPU ``torch.Generator`` seeded with ``seed``."""
    return _gen


@pytest.fixture
def within():
    """``within(result, exact, n_sigma=4)``: a Gamma-method ``result`` agrees with ``exact`` to n_sigma σ."""
    return _within


@pytest.fixture
def run_chain():
    """``run_chain(kernel, start, generator, n_therm, n_meas) -> Chain``."""
    return _run_chain


def _same_seed_chain(kernel, n_chains, n_therm):
    """One measured step after ``n_therm`` of ``n_chains`` chains from a random start, for seeds 7, 7 and 8:
    the two seed-7 runs are bit-identical, the seed-8 run differs, and the cached logp is −S of the final
    fields. Returns the seed-7 ``Chain``."""

    def chain(seed):
        g = _gen(seed)
        return _run_chain(kernel, kernel.theory.random_field(n_chains, g), g, n_therm, 1)

    a, b = chain(7), chain(7)
    assert torch.equal(a.state.x, b.state.x) and torch.equal(a.state.logp, b.state.logp)
    assert not torch.equal(chain(8).state.x, a.state.x)
    assert torch.allclose(a.state.logp, -kernel.theory.action(a.state.x), atol=1e-12, rtol=0)
    return a


@pytest.fixture
def same_seed_chain():
    """``same_seed_chain(kernel, n_chains, n_therm) -> Chain``: the seed-reproducibility check of a kernel."""
    return _same_seed_chain


def _sweeps_checked(kernel, n_chains):
    """One ``kernel.sweeps`` from a random start of ``n_chains`` chains (seed 1): the sum of the local ΔS it
    reports equals S(new) − S(old) of the theory's own action. Returns the new fields."""
    g = _gen(1)
    x = kernel.theory.random_field(n_chains, g)
    new, d_action = kernel.sweeps(x, g)
    change = kernel.theory.action(new) - kernel.theory.action(x)
    assert torch.allclose(change, torch.from_numpy(d_action), atol=1e-10, rtol=0)
    return new


@pytest.fixture
def sweeps_checked():
    """``sweeps_checked(kernel, n_chains) -> new fields``: a local kernel's ΔS bookkeeping check."""
    return _sweeps_checked


class _Killable:
    """A φ⁴ HMC run of the ``latflow`` script that can be killed and resumed (2 chains on 6², checkpointed
    every 40 stored configurations), for the kill, resume and lock tests."""

    latflow_script = str(Path(sys.executable).with_name("latflow"))
    card = {
        "theory": {"name": "phi4", "shape": [6, 6], "m2": -1.0, "lam": 1.0},
        "sampler": {"kind": "hmc"},
        "hmc": {"tau": 0.5, "n_steps": 4},
        "sample": {"n_configs": 800, "n_therm": 10, "n_chains": 2, "checkpoint_every": 40, "progress": False},
        "seed": 11,
        "device": "cpu",
    }
    datasets = ("configs", "traj", "crc32", "accepted", "logp", "dH", "obs/mag2", "obs/action")

    def write(self, directory, **changes):
        """``directory/card.yaml``: the card with ``out = directory/out`` and the top-level ``changes``."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "card.yaml"
        path.write_text(yaml.safe_dump({**self.card, "out": str(directory / "out"), **changes}))
        return path

    def latflow(self, *args, **kwargs):
        """Run the script to the end; the ``CompletedProcess`` with its text output."""
        return subprocess.run([self.latflow_script, *map(str, args)], capture_output=True, text=True,
                              timeout=300, **kwargs)

    def start(self, *args):
        """Start the script in the background; the ``Popen`` with piped text output."""
        return subprocess.Popen([self.latflow_script, *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def wait_for(path, proc, timeout=120.0):
        """Wait until ``path`` exists (the first checkpoint) while ``proc`` runs."""
        t0 = time.monotonic()
        while not path.exists():
            assert proc.poll() is None, f"finished before {path} appeared: {proc.communicate()}"
            assert time.monotonic() - t0 < timeout, f"{path} did not appear"
            time.sleep(0.01)

    def assert_same(self, a, b, datasets=None):
        """Files ``a`` and ``b`` hold equal ``datasets`` (default: ``self.datasets``); ``b`` is complete."""
        with h5py.File(a) as fa, h5py.File(b) as fb:
            for name in datasets or self.datasets:
                assert np.array_equal(fa[name][()], fb[name][()]), name
            assert fb.attrs["status"] == "complete"


@pytest.fixture(scope="session")
def killable():
    """The killable φ⁴ HMC run: ``card``, ``write(directory, **changes)``, ``latflow(*args)``,
    ``start(*args)``, ``wait_for(path, proc)``, ``assert_same(a, b, datasets=None)``."""
    return _Killable()


class _StopAfter:
    """Stand-in for ``mcmc.runtime.stop_signals``: the stop flag turns true at the n-th poll."""

    def __init__(self, n):
        self.n, self.polls = n, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __bool__(self):
        self.polls += 1
        return self.polls >= self.n


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(n)``: from now until ``monkeypatch.undo()``, a job's stop flag turns true at its n-th poll
    (``mcmc.runtime.stop_signals`` is replaced), as if the job had been sent SIGTERM."""
    import mcmc.runtime

    def patch(n):
        monkeypatch.setattr(mcmc.runtime, "stop_signals", lambda: _StopAfter(n))

    return patch

"""One writer per replica file: the lock's stale rules, and second writers (fresh, --resume, --overwrite)
started against a live run are refused at once while the live run finishes bit-identically."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mcmc.cli import main
from mcmc.io.lock import Holder, LockError, WriterLock, lock_path, process_start

LATFLOW = str(Path(sys.executable).with_name("latflow"))
CARD = {
    "theory": {"name": "phi4", "shape": [6, 6], "m2": -1.0, "lam": 1.0},
    "sampler": {"kind": "hmc"},
    "hmc": {"tau": 0.5, "n_steps": 4},
    "sample": {"n_configs": 3000, "n_therm": 10, "n_chains": 2, "checkpoint_every": 40, "progress": False},
    "seed": 11,
    "device": "cpu",
}
DATASETS = ("configs", "traj", "crc32", "accepted", "logp", "dH", "obs/mag2", "obs/action", "row_crc32")


def write_card(directory):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "card.yaml"
    path.write_text(yaml.safe_dump({**CARD, "out": str(directory / "out")}))
    return path


def write_lock(path, **fields):
    now = time.time()
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now,
              "proc_start": process_start(os.getpid()), "token": "t", **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def dead_pid():
    """A pid that certainly belongs to no process: that of a child that has been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_holder_refuses_and_is_named(tmp_path):
    h5 = tmp_path / "e.r0.h5"
    with WriterLock(h5):
        with pytest.raises(LockError, match=f"pid {os.getpid()} on {socket.gethostname()}") as err:
            WriterLock(h5).acquire()
        assert "\n" not in str(err.value)
    assert not lock_path(h5).exists()  # released


@pytest.mark.parametrize(
    "fields, stale",
    [
        ({}, False),  # this very process: alive
        ({"proc_start": "1"}, True),  # same pid, another start time: the pid was reused
        ({"host": "elsewhere"}, False),  # another host, fresh heartbeat
        ({"host": "elsewhere", "heartbeat": time.time() - 3600}, True),  # another host, silent for an hour
        ({"host": "elsewhere", "heartbeat": time.time() - 60, "pid": 1}, False),  # not silent long enough
    ],
)
def test_stale_rules(tmp_path, fields, stale):
    write_lock(tmp_path / "e.r0.lock", **fields)
    holder = Holder(**json.loads((tmp_path / "e.r0.lock").read_text()))
    assert (holder.stale_reason() is not None) == stale


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    h5 = tmp_path / "e.r0.h5"
    write_lock(lock_path(h5), pid=dead_pid())
    with WriterLock(h5) as lock:
        assert lock.owned()
        assert not lock_path(h5).with_name("e.r0.lock.break").exists()


def test_a_take_over_already_in_progress_refuses(tmp_path):
    h5 = tmp_path / "e.r0.h5"
    write_lock(lock_path(h5), pid=dead_pid())
    write_lock(lock_path(h5).with_name("e.r0.lock.break"))
    with pytest.raises(LockError, match="taking over"):
        WriterLock(h5).acquire()


def test_heartbeat_refreshes_the_lock(tmp_path):
    lock = WriterLock(tmp_path / "e.r0.h5", heartbeat_s=0.05)
    with lock:
        first = json.loads(lock.path.read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads(lock.path.read_text())["heartbeat"] > first
        assert lock.owned()


def latflow(*args):
    return subprocess.run([LATFLOW, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_second_writers_against_a_live_run(tmp_path, capsys):
    """A resubmitted job, a second terminal and an --overwrite meet a live run: each stops at once with
    one line naming the holder, and the live run ends exactly as an uninterrupted one."""
    reference = latflow("sample", write_card(tmp_path / "ref"), "--quiet")
    assert reference.returncode == 0, reference.stderr
    card = write_card(tmp_path / "live")
    live = subprocess.Popen([LATFLOW, "sample", str(card), "--quiet"], stderr=subprocess.PIPE, text=True)
    h5 = tmp_path / "live" / "out" / "out.r0.h5"
    t0 = time.monotonic()
    while not h5.with_suffix(".ckpt").exists():
        assert live.poll() is None and time.monotonic() - t0 < 120, live.stderr.read()
        time.sleep(0.01)
    for extra in (["--resume"], ["--overwrite"], []):
        capsys.readouterr()
        assert main(["sample", str(card), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"being written by pid {live.pid}" in err, err
    assert live.poll() is None, "the live run ended before the test was done: make it longer"
    assert live.wait(timeout=300) == 0, live.stderr.read()
    with h5py.File(tmp_path / "ref" / "out" / "out.r0.h5") as a, h5py.File(h5) as b:
        for name in DATASETS:
            assert np.array_equal(a[name][()], b[name][()]), name
        assert b.attrs["status"] == "complete"
    assert not lock_path(h5).exists()

"""One writer per replica file: the lock's stale rules, and second writers (fresh, --resume, --overwrite)
started against a live run are refused at once while the live run finishes bit-identically."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from mcmc.cli import main
from mcmc.io.lock import Holder, LockError, WriterLock, lock_path, process_start


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


def test_second_writers_against_a_live_run(tmp_path, capsys, killable):
    """A resubmitted job, a second terminal and an --overwrite meet a live run: each stops at once with
    one line naming the holder, and the live run ends exactly as an uninterrupted one."""
    long = {"sample": {**killable.card["sample"], "n_configs": 3000}}
    reference = killable.latflow("sample", killable.write(tmp_path / "ref", **long), "--quiet")
    assert reference.returncode == 0, reference.stderr
    card = killable.write(tmp_path / "live", **long)
    live = killable.start("sample", card, "--quiet")
    h5 = tmp_path / "live" / "out" / "out.r0.h5"
    killable.wait_for(h5.with_suffix(".ckpt"), live)
    for extra in (["--resume"], ["--overwrite"], []):
        capsys.readouterr()
        assert main(["sample", str(card), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"being written by pid {live.pid}" in err, err
    assert live.poll() is None, "the live run ended before the test was done: make it longer"
    assert live.wait(timeout=300) == 0, live.stderr.read()
    killable.assert_same(tmp_path / "ref" / "out" / "out.r0.h5", h5, (*killable.datasets, "row_crc32"))
    assert not lock_path(h5).exists()

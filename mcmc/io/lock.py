"""One writer per replica file: a lock file created atomically, refreshed by a heartbeat while the run lives.

The lock ``<out>/<ensemble>.r<rank>.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on local file
systems and on NFSv3+/Lustre/GPFS, unlike ``flock``, which cluster file systems may lack). It holds one
JSON line: host, pid, the process's start time (``/proc/<pid>/stat`` field 22, when there is a /proc),
a random token, the wall-clock start and the last heartbeat. A daemon thread rewrites the heartbeat
every ``HEARTBEAT_S`` seconds while the run lives; the lock is removed when the run ends.

A lock is judged stale only by rules that cannot misfire on a live run:

- same host: its pid no longer exists, or the pid now belongs to a process started at another time
  (the pid was reused);
- another host: its heartbeat is older than ``STALE_S`` (default 15 minutes, 30 missed heartbeats;
  ``LATFLOW_LOCK_STALE_S`` overrides it), since a live run refreshes it every ``HEARTBEAT_S``.

Breaking a stale lock happens under a second lock (``.lock.break``, also ``O_EXCL``), and the lock is
read and judged again under it, so two processes can never both take over one stale lock.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("latflow")

HEARTBEAT_S = 30.0


class LockError(RuntimeError):
    """The replica file has a live writer (or its lock cannot be taken); one-line message."""


def stale_after_s() -> float:
    """Seconds without a heartbeat after which another host's lock is stale."""
    return float(os.environ.get("LATFLOW_LOCK_STALE_S", 900.0))


def lock_path(h5_path: str | Path) -> Path:
    """``<ensemble>.r<rank>.lock`` beside the replica file."""
    return Path(h5_path).with_suffix(".lock")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc``), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 counted from the pid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """What a lock file says about its writer."""

    host: str
    pid: int
    started: float
    heartbeat: float
    proc_start: str | None = None
    token: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this lock's writer is certainly gone, or None when it may be alive."""
        if self.host == socket.gethostname():
            if not _pid_alive(self.pid):
                return f"its process {self.pid} no longer exists"
            now_start = process_start(self.pid)
            if self.proc_start and now_start and now_start != self.proc_start:
                return f"pid {self.pid} now belongs to another process"
            return None
        age = (time.time() if now is None else now) - self.heartbeat
        if age > stale_after_s():
            return f"its heartbeat from {self.host} is {age:.0f} s old (limit {stale_after_s():.0f} s)"
        return None


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file; None when the file is gone or unreadable (being written)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Holder(
            str(data["host"]),
            int(data["pid"]),
            float(data["started"]),
            float(data["heartbeat"]),
            data.get("proc_start"),
            str(data.get("token", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create(path: Path, holder: Holder) -> bool:
    """Create ``path`` exclusively with ``holder``'s record; False when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(_record(holder))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _record(holder: Holder) -> str:
    return (
        json.dumps(
            {
                "host": holder.host,
                "pid": holder.pid,
                "started": holder.started,
                "heartbeat": holder.heartbeat,
                "proc_start": holder.proc_start,
                "token": holder.token,
            }
        )
        + "\n"
    )


class WriterLock:
    """The exclusive right to write one replica file (and, on rank 0, the flow beside it).

    ``acquire`` raises ``LockError`` naming the holder when another live writer has it. Use as a context
    manager; the heartbeat thread runs until ``release``.
    """

    def __init__(self, h5_path: str | Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.target = Path(h5_path)
        self.path = lock_path(h5_path)
        self.heartbeat_s = heartbeat_s
        now = time.time()
        self.holder = Holder(
            socket.gethostname(), os.getpid(), now, now, process_start(os.getpid()), secrets.token_hex(8)
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not _create(self.path, self.holder):
            self._take_over_stale()
        self._thread = threading.Thread(target=self._beat, name="latflow-lock-heartbeat", daemon=True)
        self._thread.start()

    def _refuse(self, holder: Holder | None) -> LockError:
        who = holder.describe() if holder else "a writer whose lock file is being written"
        return LockError(
            f"{self.target} is being written by {who} (lock {self.path}); wait for it to finish or stop "
            "it, then --resume (delete the lock only if that process is certainly gone)"
        )

    def _take_over_stale(self) -> None:
        holder = read_holder(self.path)
        if holder is None or holder.stale_reason() is None:
            raise self._refuse(holder)
        breaker = self.path.with_name(self.path.name + ".break")
        if not _create(breaker, self.holder):
            raise LockError(f"{self.target}: another process is taking over its stale lock ({breaker})")
        try:
            holder = read_holder(self.path)  # judged again: it may have changed meanwhile
            reason = holder.stale_reason() if holder else None
            if holder is None or reason is None:
                raise self._refuse(holder)
            log.warning("taking over the stale lock %s of %s: %s", self.path, holder.describe(), reason)
            self.path.unlink(missing_ok=True)
            if not _create(self.path, self.holder):
                raise self._refuse(read_holder(self.path))
        finally:
            breaker.unlink(missing_ok=True)

    def owned(self) -> bool:
        held = read_holder(self.path)
        return held is not None and held.token == self.holder.token

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.owned():
                log.error("the lock %s is no longer this run's; another writer may have taken it", self.path)
                return
            fresh = Holder(**{**self.holder.__dict__, "heartbeat": time.time()})
            tmp = self.path.with_name(f"{self.path.name}.{self.holder.token}.tmp")
            try:
                tmp.write_text(_record(fresh))
                os.replace(tmp, self.path)  # atomic: readers see the old or the new record, never half
            except OSError as exc:
                log.warning("could not refresh the lock %s (%s)", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.owned():
            self.path.unlink(missing_ok=True)

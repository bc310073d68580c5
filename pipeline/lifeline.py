"""Processes tied to the process that started them, and whether a recorded process still runs.

- :func:`die_with_parent`: a worker process (ingest's decode pool) asks the Linux kernel to SIGKILL it when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), so a step killed with -9 leaves no orphaned worker behind. The kernel does it, so nothing has to
  poll and no signal handler has to run in the dying parent (SIGKILL runs none). Elsewhere it does nothing.
- :func:`process_alive`: does the process that wrote a `runs` row still run (on this host)? A pid the kernel handed to a newer
  process (one started after the run) does not count, nor does a zombie.

Standard library only (ctypes, /proc): the foundation layer, below the store.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from datetime import datetime, timezone

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def host() -> str:
    """The name a `runs` row records as its host, and compares with."""
    return socket.gethostname()


def die_with_parent(parent_pid: int) -> None:
    """In a child process (a pool's initializer): be SIGKILLed when the parent dies. ``parent_pid``: the parent's pid as the parent
    saw it, to catch a parent that died before this call (then exit at once). Linux only; elsewhere a no-op.

    Caveat (prctl(2)): the signal comes when the *thread* that forked the child exits; pools here start their workers from the
    thread that runs the step."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # a sandbox that forbids prctl: the worker lives on as before
    if os.getppid() != parent_pid:  # the parent died before prctl took hold: we were reparented already
        os._exit(1)


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_since_boot(pid: int) -> float | None:
    """When ``pid`` started, in seconds since boot: the kernel's tick count for it, which never changes. Use it, not a wall-clock
    start time, to tell a process from a later one that got its pid: Linux recomputes /proc/stat's boot time from the current clock
    on every read, in whole seconds, so a wall-clock start time (boot time + this) can move by a second between two reads.
    None where /proc cannot tell (not Linux, or the process is gone)."""
    return _since_boot(_stat_fields(pid))


def _since_boot(fields: list[bytes] | None) -> float | None:
    """The start time in seconds since boot from the fields of :func:`_stat_fields`."""
    try:
        return int(fields[19]) / os.sysconf("SC_CLK_TCK") if fields else None
    except (IndexError, ValueError):
        return None


def _proc_start(pid: int) -> tuple[str, float] | None:
    """(state, start time in seconds since the epoch) of ``pid`` from /proc; None where /proc cannot tell."""
    fields = _stat_fields(pid)  # read once: the state and the start of one process
    since_boot = _since_boot(fields)
    if since_boot is None:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return fields[0].decode(), boot + since_boot


def process_alive(pid: int, since: datetime | None = None) -> bool:
    """Whether process ``pid`` of this host runs, and (with ``since``, when its run started) is the process that started then:
    one started more than a second after ``since`` got the pid reused. A zombie (killed, not yet reaped) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    proc = _proc_start(pid)
    if proc is None:
        return True
    state, started = proc
    if state in ("Z", "X"):
        return False
    if since is None:
        return True
    since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)  # the store writes UTC; SQLite gives it back naive
    return started <= since.timestamp() + 1.0  # /proc's boot time is in whole seconds

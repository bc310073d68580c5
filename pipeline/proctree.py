"""Processes this project starts and must stop again: each is started as the leader of a new session, and stopped together with
every process of that session and every descendant it had (Airflow's scheduler forks LocalExecutor workers, a worker forks task
supervisors that move into process groups of their own, a task may start more: all of them stay in the session).

Stopping: SIGTERM to all of them at once, up to ``grace_s`` for them to exit, then SIGKILL to what is left (and to anything forked
meanwhile). Linux never hands out a pid that is still in use as a session id, so the processes whose session id is a leader we
started are ours, even after the leader itself has exited. Needs psutil (installed with Airflow, the ``airflow`` extra).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from pipeline import lifeline


def start(cmd: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """``cmd`` as the leader of a new session (its own process group): a Ctrl-C in the terminal reaches only us, and we stop it
    with everything it started. Output goes to ``log`` (appended) or, without one, to our own stdout/stderr."""
    if log is None:
        return subprocess.Popen(cmd, env=env, start_new_session=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _living(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def members(leaders: Iterable[int]) -> list[psutil.Process]:
    """The living processes of the sessions led by ``leaders`` and the descendants of the leaders (one that moved to a session of
    its own with setsid stays a descendant while its parent lives). Zombies are not counted."""
    leaders = set(leaders)
    found: dict[int, psutil.Process] = {}
    for pid in psutil.pids():
        if pid != os.getpid() and _sid(pid) in leaders:
            try:
                found[pid] = psutil.Process(pid)
            except psutil.Error:
                pass
    for pid in leaders:
        try:
            for p in psutil.Process(pid).children(recursive=True):
                found.setdefault(p.pid, p)
        except psutil.Error:
            pass
    return _living(found.values())


def _signal(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def stop(leaders: Iterable[int], grace_s: float = 30.0) -> list[int]:
    """Stop every process of the sessions led by ``leaders`` (see :func:`members`): SIGTERM, then SIGKILL after ``grace_s``.
    Returns the pids still alive at the end (empty unless a process is stuck in the kernel)."""
    leaders = list(leaders)
    procs, signalled = members(leaders), set()
    deadline = time.monotonic() + grace_s
    while procs and time.monotonic() < deadline:
        _signal([p for p in procs if p.pid not in signalled], signal.SIGTERM)  # also what was forked since the last pass
        signalled.update(p.pid for p in procs)
        psutil.wait_procs(procs, timeout=0.5)
        procs = members(leaders)
    for _ in range(5):
        procs = members(leaders)
        if not procs:
            return []
        _signal(procs, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=2)
    return [p.pid for p in members(leaders)]


def is_alive(pid: int, started: float | None = None) -> bool:
    """``pid`` runs (not a zombie) and, when ``started`` (its :func:`create_time`) is given, is still the process that was started
    then, not a later one that got the pid."""
    try:
        p = psutil.Process(pid)
        if started is not None and create_time(pid) != started:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_time(pid: int) -> float:
    """A start time of ``pid`` that never changes, for telling it from a later process with the same pid: seconds since boot on
    Linux (:func:`pipeline.lifeline.started_since_boot`; psutil's wall-clock time moves with /proc's boot time, by a second now
    and then, and made a starting api-server look dead), psutil's wall-clock time elsewhere. Raises psutil.NoSuchProcess when
    ``pid`` is gone."""
    since_boot = lifeline.started_since_boot(pid)
    return since_boot if since_boot is not None else psutil.Process(pid).create_time()


def supervise(procs: list[subprocess.Popen], grace_s: float = 30.0) -> int:
    """Wait until one of ``procs`` (started by :func:`start`) exits or SIGTERM, SIGINT (Ctrl-C) or SIGHUP arrives, then
    :func:`stop` all of them with what they started, on any exception too. Returns 128 + the signal's number, else the exit
    status of the process that ended first."""
    received: list[int] = []
    caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in caught}
    try:
        while not received and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        try:
            left = stop([p.pid for p in procs], grace_s)  # a second Ctrl-C meanwhile only lands in `received`
            for p in procs:
                p.poll()  # reap our own children
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if left:
        print(f"stop: processes {left} did not exit after SIGKILL", file=sys.stderr)
    if received:
        return 128 + received[0]
    return next(p.returncode for p in procs if p.returncode is not None)

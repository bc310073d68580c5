"""WorkerBridge: a handler in a child process, reached with JSON lines over its stdin/stdout.

Each request carries a uuid4 id and the reply is matched by it (a late reply to a request that already timed
out is dropped). A request that outlives its timeout kills the worker; a worker that dies (crash, kill, OOM)
fails the request in flight at once. Either way the next request starts a fresh worker, counted in ``restarts``.
The worker's stderr is passed through to ours, and its last lines are kept for error messages.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from pipeline.service import protocol

log = logging.getLogger(__name__)
_EOF = object()


class WorkerError(RuntimeError):
    """The worker could not answer: it crashed, hung or would not start. Retryable."""

    retryable = True


class WorkerCrashed(WorkerError):
    pass


class WorkerTimeout(WorkerError):
    pass


class WorkerStartError(WorkerError):
    pass


class RemoteError(RuntimeError):
    """The worker answered with an error: ``kind`` is the exception type raised there."""

    def __init__(self, kind: str, message: str, retryable: bool):
        super().__init__(f"{kind}: {message}" if retryable else message)
        self.kind, self.message, self.retryable = kind, message, retryable


def is_retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


def worker_command(handler: str, init: dict[str, Any] | None = None, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "pipeline.service.worker", "--handler", handler, "--init", json.dumps(init or {})]


class WorkerBridge:
    def __init__(self, command: list[str], env: dict[str, str] | None, start_timeout: float, request_timeout: float, health_timeout: float,
                 name: str = "worker", stderr_lines: int = 20):
        """The timeouts are configs/pipeline.yaml ``service`` (``start_timeout_s``, ``request_timeout_s``, ``health_timeout_s``)."""
        self.command, self.env, self.name = list(command), env, name
        self.start_timeout, self.request_timeout, self.health_timeout = start_timeout, request_timeout, health_timeout
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready: dict[str, Any] = {}
        self._replies: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._lock = threading.RLock()

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def restarts(self) -> int:
        return max(self.starts - 1, 0)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the worker (if none is running) and wait for its ``ready`` event."""
        with self._lock:
            if self.alive():
                return
            self._reap()
            self.starts += 1
            self._replies = queue.Queue()
            self._stderr_tail.clear()
            env = {**os.environ, **(self.env or {})}
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            threading.Thread(target=self._read_stdout, args=(self.proc, self._replies), daemon=True, name=f"{self.name}-stdout").start()
            threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True, name=f"{self.name}-stderr").start()
            message = self._next_message(t0 + self.start_timeout)
            if message is None:
                self.kill()
                raise WorkerStartError(f"{self.name}: no ready message within {self.start_timeout:g} s{self._tail()}")
            if message is _EOF or message.get("event") != "ready":
                detail = message.get("error", {}).get("message") if isinstance(message, dict) else None
                code = self._wait_exit()
                self.kill()
                if detail:
                    raise WorkerStartError(f"{self.name}: could not start: {detail}")
                raise WorkerStartError(f"{self.name}: exited during start (code {code}){self._tail()}")
            self.ready = message
            log.info("%s: worker pid %s ready in %.2f s%s", self.name, self.proc.pid, time.monotonic() - t0,
                     f" (restart {self.restarts})" if self.restarts else "")

    def kill(self) -> None:
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
            self._reap()

    def dispose(self, timeout: float = 5.0) -> None:
        """Ask the worker to shut down; kill it if it does not exit within ``timeout``."""
        with self._lock:
            if self.alive():
                try:
                    self._call("shutdown", {}, timeout)
                except (WorkerError, RemoteError, OSError):
                    pass
                try:
                    self.proc.wait(timeout)  # type: ignore[union-attr]
                except subprocess.TimeoutExpired:
                    pass
            self.kill()

    def __enter__(self) -> WorkerBridge:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.dispose()

    # --- requests -------------------------------------------------------------------------------

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Send one request and wait for its reply; start (or restart) the worker first when needed."""
        with self._lock:
            self.start()
            return self._call(method, params or {}, self.request_timeout if timeout is None else timeout)

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        return self.request("ping", timeout=self.health_timeout if timeout is None else timeout)

    def health_check(self) -> dict[str, Any]:
        """Ping the worker (starting it when it is down). A worker that does not answer is killed and started again."""
        try:
            return {"ok": True, **self.ping()}
        except WorkerError as exc:
            log.warning("%s: health check failed (%s); restarting the worker", self.name, exc)
            self.kill()
            try:
                return {"ok": True, "recovered_from": str(exc), **self.ping()}
            except WorkerError as again:
                return {"ok": False, "error": str(again)}

    def _call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        proc = self.proc
        request_id = uuid.uuid4().hex
        line = protocol.dumps({"id": request_id, "method": method, "params": params}) + "\n"
        # written from a thread: a worker that stops reading must not block us past the timeout
        threading.Thread(target=self._write, args=(proc, line.encode()), daemon=True, name=f"{self.name}-stdin").start()
        deadline = time.monotonic() + timeout
        while True:
            message = self._next_message(deadline)
            if message is None:
                self.kill()
                raise WorkerTimeout(f"{self.name}: {method!r} got no reply within {timeout:g} s; the worker was killed")
            if message is _EOF:
                code = self._wait_exit()
                self.kill()
                raise WorkerCrashed(f"{self.name}: worker exited (code {code}) during {method!r}{self._tail()}")
            if message.get("id") != request_id:
                log.debug("%s: dropping a reply to an earlier request %s", self.name, message.get("id"))
                continue
            if message.get("ok"):
                return message.get("result")
            error = message.get("error") or {}
            raise RemoteError(error.get("type", "Error"), error.get("message", ""), bool(error.get("retryable")))

    # --- plumbing -------------------------------------------------------------------------------

    def _next_message(self, deadline: float):
        try:
            return self._replies.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            return None

    @staticmethod
    def _write(proc: subprocess.Popen, data: bytes) -> None:
        try:
            proc.stdin.write(data)  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):  # the worker died or was killed: the stdout reader reports it
            pass

    @staticmethod
    def _read_stdout(proc: subprocess.Popen, replies: queue.Queue) -> None:
        with proc.stdout:  # type: ignore[union-attr]
            for raw in proc.stdout:  # type: ignore[union-attr]
                try:
                    replies.put(protocol.loads(raw))
                except ValueError:
                    log.warning("worker: ignoring a line that is not a protocol message: %r", raw[:200])
        replies.put(_EOF)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        with proc.stderr:  # type: ignore[union-attr]
            for raw in proc.stderr:  # type: ignore[union-attr]
                text = raw.decode(errors="replace")
                self._stderr_tail.append(text.rstrip())
                try:
                    sys.stderr.write(text)
                    sys.stderr.flush()
                except (OSError, ValueError):  # our stderr is gone (interpreter or test teardown)
                    pass

    def _wait_exit(self, timeout: float = 2.0) -> int | None:
        try:
            return self.proc.wait(timeout) if self.proc is not None else None
        except subprocess.TimeoutExpired:
            return None

    def _reap(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def _tail(self) -> str:
        lines = [line for line in list(self._stderr_tail) if line.strip()]
        return f"; last stderr: {lines[-1][:300]}" if lines else ""

"""Model service: a real worker process (tests/service_handlers.py) that crashes, hangs and recovers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ServiceSettings, defaults
from pipeline.service import protocol
from pipeline.service.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from pipeline.service.bridge import RemoteError, WorkerBridge, WorkerCrashed, WorkerStartError, WorkerTimeout, is_retryable, worker_command
from pipeline.service.model_service import ModelService
from pipeline.service.retry import backoff_delay, retry

TESTS = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
HANDLER = "service_handlers:FaultyHandler"
FAST = defaults(ServiceSettings, start_timeout_s=20, request_timeout_s=5, health_timeout_s=2, retries=2, backoff_base_s=0.01, backoff_max_s=0.05,
                breaker_max_failures=3, breaker_reset_s=0.3, latency_window=100)


def bridge(init=None, **kw) -> WorkerBridge:
    return WorkerBridge(worker_command(HANDLER, init), env=ENV, start_timeout=20, request_timeout=kw.pop("request_timeout", 5),
                        health_timeout=kw.pop("health_timeout", 2), **kw)


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0


def test_protocol_round_trips_arrays_and_rejects_nan():
    arr = np.linspace(-1, 1, 7, dtype=np.float32).reshape(7)
    back = protocol.loads(protocol.dumps({"id": "x", "params": {"array": arr, "n": np.int64(3)}}))
    assert back["params"]["n"] == 3 and back["params"]["array"].dtype == np.float32
    np.testing.assert_array_equal(back["params"]["array"], arr)
    with pytest.raises(ValueError):
        protocol.dumps({"value": float("nan")})


def test_bridge_answers_matches_ids_and_keeps_stdout_clean():
    with bridge() as b:
        pid = b.pid
        out = b.request("echo", {"value": "hi", "array": np.arange(4, dtype=np.float32)})
        assert out["value"] == "hi" and out["pid"] == pid
        np.testing.assert_array_equal(out["array"], np.arange(4, dtype=np.float32) * 2)
        assert b.request("chatty") == {"ok": True}  # a print inside the handler goes to stderr, not into the protocol
        health = b.health_check()
        assert health["ok"] and health["pid"] == pid and health["served"] == 2 and health["peak_rss_mb"] > 1
        with pytest.raises(RemoteError) as err:
            b.request("no_such_method")
        assert not err.value.retryable and "unknown method" in str(err.value)
        assert b.restarts == 0 and b.pid == pid
    assert b.proc is None and gone(pid)  # disposed: the worker exited


def test_bridge_crash_fails_the_request_at_once_and_the_next_one_restarts():
    with bridge() as b:
        first = b.pid
        t0 = time.monotonic()
        with pytest.raises(WorkerCrashed, match=r"exited \(code 3\) during 'crash'"):
            b.request("crash", {"code": 3})
        assert time.monotonic() - t0 < 3  # not a timeout
        assert b.request("echo", {"value": 1})["pid"] != first
        assert b.restarts == 1 and gone(first)


def test_bridge_hang_times_out_kills_and_recovers():
    with bridge(request_timeout=0.5) as b:
        first = b.pid
        t0 = time.monotonic()
        with pytest.raises(WorkerTimeout, match="no reply within 0.5 s"):
            b.request("hang", {"seconds": 30})
        assert 0.4 < time.monotonic() - t0 < 3
        assert gone(first)
        assert b.request("echo", {"value": 2})["value"] == 2 and b.restarts == 1


def test_bridge_bad_input_is_not_retryable_and_keeps_the_worker():
    with bridge() as b:
        pid = b.pid
        with pytest.raises(RemoteError) as err:
            b.request("bad_input", {"message": "audio.array[3]: not a number"})
        assert err.value.kind == "ValueError" and not is_retryable(err.value) and str(err.value) == "audio.array[3]: not a number"
        with pytest.raises(RemoteError) as err:
            b.request("broken")
        assert is_retryable(err.value) and "RuntimeError: CUDA error" in str(err.value)
        assert b.pid == pid and b.restarts == 0


def test_bridge_reports_start_failures():
    with pytest.raises(WorkerStartError, match="cannot open the model: weights file is corrupt"):
        bridge({"fail_at_start": True}).start()
    missing = WorkerBridge(worker_command("no_such_module:Thing"), env=ENV, start_timeout=20, request_timeout=5, health_timeout=2)
    with pytest.raises(WorkerStartError, match="No module named 'no_such_module'"):
        missing.start()


def test_health_check_restarts_a_killed_worker():
    with bridge() as b:
        first = b.pid
        os.kill(first, signal.SIGKILL)
        health = b.health_check()
        assert health["ok"] and health["pid"] != first and b.restarts == 1


def test_retry_only_retryable_errors_with_growing_backoff():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise WorkerCrashed("worker exited")
        return "done"

    assert retry(flaky, 3, is_retryable, base_delay=0.1, max_delay=1.0, sleep=sleeps.append, rand=lambda: 1.0) == "done"
    assert len(calls) == 3 and sleeps == [0.1, 0.2]
    calls.clear()

    def bad_input():
        calls.append(1)
        raise RemoteError("ValueError", "bad", False)

    with pytest.raises(RemoteError):
        retry(bad_input, 3, is_retryable, 0.2, 5.0, sleep=sleeps.append)
    assert len(calls) == 1  # bad input: no retry

    def always_crashes():
        calls.append(1)
        raise WorkerCrashed("again")

    calls.clear()
    with pytest.raises(WorkerCrashed):
        retry(always_crashes, 2, is_retryable, 0.2, 5.0, sleep=lambda s: None)
    assert len(calls) == 3  # 1 + 2 retries, then the last error
    delays = [backoff_delay(a, 0.2, 1.0) for a in (1, 2, 3, 4, 5) for _ in range(20)]
    assert all(0.1 <= d <= 1.0 for d in delays) and max(backoff_delay(5, 0.2, 1.0, lambda: 0.0), 0.5) == 0.5


def test_circuit_breaker_states():
    now = [0.0]
    breaker = CircuitBreaker(max_failures=2, reset_timeout=10, counts=is_retryable, clock=lambda: now[0])

    def crash():
        raise WorkerCrashed("boom")

    def bad():
        raise RemoteError("ValueError", "bad input", False)

    for _ in range(3):  # bad input does not count
        with pytest.raises(RemoteError):
            breaker.call(bad)
    assert breaker.state == CLOSED
    for _ in range(2):
        with pytest.raises(WorkerCrashed):
            breaker.call(crash)
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpen, match="next trial in 10.0 s"):
        breaker.call(lambda: "not called")
    now[0] = 10.0
    assert breaker.state == HALF_OPEN
    with pytest.raises(WorkerCrashed):
        breaker.call(crash)  # the trial fails: open again for another reset_timeout
    assert breaker.state == OPEN
    now[0] = 20.0
    assert breaker.call(lambda: "ok") == "ok" and breaker.state == CLOSED and breaker.failures == 0
    assert breaker.transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_model_service_retries_a_crash_and_recovers(tmp_path):
    service = ModelService(HANDLER, {"state_dir": str(tmp_path)}, settings=FAST, env=ENV)
    caps = service.initialize()
    assert caps["name"] == "faulty" and caps["max_duration_s"] == 2.0 and caps["requests"] == 0 and caps["success_rate"] is None
    try:
        first = service.backend.pid
        out = service.call("crash_once", {"name": "a"})  # crashes the worker, the retry reaches a fresh one
        assert out["recovered"] and out["pid"] != first
        vec = service.process(np.ones(800, dtype=np.float32), 800)
        np.testing.assert_allclose(vec, [1.0, 0.0, 800.0])
        with pytest.raises(RemoteError, match="sampling_rate: expected a positive number, got 0"):
            service.process(np.ones(8, dtype=np.float32), 0)
        with pytest.raises(ValueError, match="over the service's 2 s limit"):
            service.process(np.ones(3000, dtype=np.float32), 1000)
        caps = service.capabilities()
        assert caps["restarts"] == 1 and caps["retries"] == 1 and caps["breaker"] == CLOSED
        assert caps["requests"] == 4 and caps["success_rate"] == pytest.approx(2 / 4)
        assert 0 < caps["latency_ms_p50"] <= caps["latency_ms_p95"] and caps["throughput_rps"] > 0
        assert caps["service_peak_rss_mb"] > 10 and caps["worker_peak_rss_mb"] > 10
    finally:
        service.dispose()
    assert service.backend.proc is None


def test_model_service_circuit_opens_on_repeated_hangs_and_closes_after_reset():
    settings = ServiceSettings(**{**FAST.__dict__, "retries": 0, "breaker_max_failures": 2, "request_timeout_s": 0.4})
    with ModelService(HANDLER, None, settings, env=ENV) as service:
        for _ in range(2):
            with pytest.raises(WorkerTimeout):
                service.call("hang", {"seconds": 30})
        assert service.breaker.state == OPEN
        starts = service.backend.starts
        t0 = time.monotonic()
        with pytest.raises(CircuitOpen):
            service.call("echo", {"value": 1})
        assert time.monotonic() - t0 < 0.05 and service.backend.starts == starts  # failed fast, no worker touched
        time.sleep(settings.breaker_reset_s + 0.05)
        assert service.breaker.state == HALF_OPEN
        assert service.call("echo", {"value": 1})["value"] == 1  # the trial request goes through and closes it
        assert service.breaker.state == CLOSED and service.capabilities()["restarts"] >= 1


def test_model_service_in_process_backend_has_the_same_interface():
    with ModelService(HANDLER, None, FAST, isolated=False) as service:
        np.testing.assert_allclose(service.process(np.full(10, 2.0, dtype=np.float32), 10), [2.0, 0.0, 10.0])
        with pytest.raises(RemoteError) as err:
            service.call("bad_input")
        assert not err.value.retryable
        assert service.health()["ok"] and service.capabilities()["isolated"] is False

"""The worker process: hosts one handler object and answers protocol requests (JSON lines) on stdin/stdout.

    python -m pipeline.service.worker --handler pipeline.service.handlers.wav2vec2:Wav2Vec2Handler \
        --init '{"settings": {...the wav2vec2: config section...}, "model": "/models/w2v"}'

The handler is built once at start from ``--init`` (JSON keyword arguments; the caller puts the settings there, the
worker reads no config). A request's ``method`` is called
with its ``params`` as keyword arguments; ``ping`` (health), ``capabilities`` and ``shutdown`` are built in.
The protocol owns the real stdout: file descriptor 1 is pointed at stderr, so a library that prints cannot
corrupt it. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from typing import Any

from pipeline.errors import one_line
from pipeline.service import protocol

log = logging.getLogger("pipeline.service.worker")


class UnknownMethod(Exception):
    pass


def proc_memory_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM from /proc/<pid>/status), in MiB; {} where /proc has no such process."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = int(value.split()[0]) / 1024
    except OSError:
        return {}
    return out


def load_handler(spec: str, init: dict[str, Any]) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--handler {spec!r}: expected MODULE:FACTORY")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**init)


def serve(handler: Any, spec: str, protocol_out, lines=None) -> int:
    """Answer requests until stdin closes or a ``shutdown`` request comes. Returns the exit code."""
    started, served = time.monotonic(), 0

    def send(message: dict) -> None:
        protocol_out.write(protocol.dumps(message) + "\n")
        protocol_out.flush()

    send({"event": "ready", "pid": os.getpid(), "handler": spec})
    for line in lines if lines is not None else sys.stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            request = protocol.loads(line)
            request_id, method, params = request.get("id"), request.get("method"), request.get("params") or {}
            if method == "ping":
                result: Any = {"pid": os.getpid(), "uptime_s": time.monotonic() - started, "served": served, **proc_memory_mb()}
            elif method == "shutdown":
                send({"id": request_id, "ok": True, "result": {"served": served}})
                return 0
            elif method == "capabilities" and not hasattr(handler, "capabilities"):
                result = {}
            elif isinstance(method, str) and not method.startswith("_") and callable(getattr(handler, method, None)):
                result = getattr(handler, method)(**params)
            else:
                raise UnknownMethod(f"unknown method {method!r}")
            served += 1
            send({"id": request_id, "ok": True, "result": result})
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as an error reply
            log.debug("request %s failed", request_id, exc_info=True)
            send(protocol.error_reply(request_id, exc))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.service.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--handler", required=True, help="MODULE:FACTORY building the handler object")
    parser.add_argument("--init", default="{}", help="JSON object of keyword arguments for the factory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pipeline").setLevel(logging.INFO)
    protocol_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries land on stderr, not in the protocol
    sys.stdout = sys.stderr
    try:
        handler = load_handler(args.handler, json.loads(args.init))
    except Exception as exc:  # noqa: BLE001 - reported to the bridge as a start failure
        print(f"worker: cannot start {args.handler}: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        protocol_out.write(protocol.dumps({"event": "start_failed", "error": protocol.error_reply(None, exc)["error"]}) + "\n")
        protocol_out.flush()
        return 3
    return serve(handler, args.handler, protocol_out)


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP search service (`cloudtune serve`, pipeline/api/) on a tiny real published run: real uvicorn servers on free
loopback ports, spoken to over HTTP with httpx. Answers equal `cloudtune search --json`; bad input is refused with its
status and reason while the server keeps serving; concurrent callers each get their own answer; a full queue is a 503."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from api_server import ENV, Server, evaluated_run

from pipeline import config, paths
from pipeline.api.app import create_app
from pipeline.api.auth import API_KEY_ENV, authorized, check_bind, is_loopback
from pipeline.api.batching import Batcher
from pipeline.cli import main
from pipeline.cli.serve import app_from_config, load_searcher
from pipeline.search import Searcher
from pipeline.steps.retrieval import embedder_settings, publish
from pipeline.store import db

# the limits of the main test server (configs/pipeline.yaml search_api, overridden as an operator would)
LIMITS = {"CLOUDTUNE__SEARCH_API__MAX_UPLOAD_MB": "0.5", "CLOUDTUNE__SEARCH_API__MIN_CLIP_S": "1.0", "CLOUDTUNE__SEARCH_API__MAX_CLIP_S": "6.0",
          "CLOUDTUNE__SEARCH_API__MAX_FILES": "4", "CLOUDTUNE__SEARCH_API__MAX_WAIT_MS": "20", "CLOUDTUNE__SEARCH_API__DEVICE": "cpu",
          "CLOUDTUNE__SEARCH_API__TRANSCRIBE": "false"}  # the speech recognizer's worker: tests/test_search_api_models.py
KEY = "k" * 24
TOP_K = 5


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """6 demo tracks ingested, split (from tiny rvq tokens), mel-stats embedded and flat-indexed by a tiny evaluation of run r1,
    published; run r2 the same on 6 other tracks, not published; clips cut from r1's source files in several formats; the
    main server, running on r1."""
    root = tmp_path_factory.mktemp("search_api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        mp.delenv("CLOUDTUNE_DB_URL", raising=False)
        for key, value in {**ENV, **LIMITS}.items():
            mp.setenv(key, value)
        src = evaluated_run(root / "src", "r1", "c", seed=5)
        publish("r1")
        evaluated_run(root / "src2", "r2", "d", seed=11)  # run r2: another catalog, evaluated, not published
        clips = _clips(sorted(Path(src).rglob("*.flac")), root / "clips")
        with Server(app_from_config()) as server:
            server.wait_ready()
            searcher = load_searcher("cpu")
            db.dispose_engines()
            yield {"root": root, "home": root / "home", "clips": clips, "url": server.url, "searcher": searcher}


def _clips(sources: list[Path], out: Path) -> dict[str, Path]:
    """3 s from 2 s into three source tracks, as wav, flac, ogg and mp3; plus a 0.5 s clip and a 7 s one (outside the limits)."""
    out.mkdir()
    clips = {}
    for i, (source, fmt) in enumerate(zip(sources, ("WAV", "FLAC", "OGG", "MP3"), strict=False)):
        wave, sr = sf.read(source, dtype="float32")
        clips[f"{i}.{fmt.lower()}"] = path = out / f"{i}.{fmt.lower()}"
        sf.write(path, wave[2 * sr: 5 * sr], sr, format=fmt)
    wave, sr = sf.read(sources[0], dtype="float32")
    for name, seconds in (("short.wav", 0.5), ("long.wav", 7.0)):
        clips[name] = out / name
        sf.write(clips[name], wave[: int(seconds * sr)], sr)
    return clips


def _cli_answers(built, capsys, monkeypatch, clips: list[Path]) -> list[dict]:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(built["home"]))
    capsys.readouterr()
    assert main(["search", *map(str, clips), "--json", "--top-k", str(TOP_K), "--device", "cpu"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _same_hits(got: list[dict], want: list[dict]) -> None:
    assert [(h["rank"], h["track_id"], h["source_uri"], h["offset_s"]) for h in got] == \
           [(h["rank"], h["track_id"], h["source_uri"], h["offset_s"]) for h in want]
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)  # a batch's BLAS may round differently


TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


def test_search_answers_equal_cloudtune_search_json(built, capsys, monkeypatch):
    names = ["0.wav", "1.flac", "2.ogg", "3.mp3"]
    want = _cli_answers(built, capsys, monkeypatch, [built["clips"][n] for n in names])
    for name, cli in zip(names, want, strict=True):
        data = built["clips"][name].read_bytes()
        raw = httpx.post(f"{built['url']}/v1/search", params={"top_k": TOP_K}, content=data, headers={"Content-Type": TYPES[name.split(".")[1]]})
        form = httpx.post(f"{built['url']}/v1/search", params={"top_k": TOP_K}, files={"file": (name, data)})
        for r in (raw, form):
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["run_id"], body["embedder"], body["index_kind"]) == ("r1", "mel-stats", "flat")
            assert body["seconds"] > 0 and body["clip_s"] == pytest.approx(3.0, abs=0.06)  # mp3 and ogg pad a few ms
            _same_hits(body["results"], cli["results"])
        assert len(cli["results"]) == TOP_K
    assert all(h["source_uri"].startswith("file://") for h in want[0]["results"])
    top = httpx.post(f"{built['url']}/v1/search", content=built["clips"]["0.wav"].read_bytes(), headers={"Content-Type": "audio/wav"}).json()
    assert len(top["results"]) == min(config.load_index().search.top_k, 6)  # no top_k: configs/index.yaml search.top_k (6 tracks here)


def test_a_clip_finds_its_own_track(built):
    """Cut from a source file, the clip's best hit is that file's track, near the offset it was cut at (2 s)."""
    r = httpx.post(f"{built['url']}/v1/search", content=built["clips"]["0.wav"].read_bytes(), headers={"Content-Type": "audio/wav"})
    best = r.json()["results"][0]
    assert best["rank"] == 1 and best["offset_s"] == pytest.approx(2.0, abs=1.0)
    assert best["source_uri"].endswith("/track_0000.flac") and best["score"] > r.json()["results"][1]["score"]


def test_batch_answers_each_file_in_order_with_its_own_errors(built):
    c = built["clips"]
    files = [("file", ("a.wav", c["0.wav"].read_bytes())), ("file", ("junk.bin", b"hello, not audio" * 50)),
             ("file", ("b.flac", c["1.flac"].read_bytes())), ("file", ("short.wav", c["short.wav"].read_bytes()))]
    r = httpx.post(f"{built['url']}/v1/search:batch", params={"top_k": 3}, files=files)
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["file"] for i in items] == ["a.wav", "junk.bin", "b.flac", "short.wav"]
    assert items[1] == {"file": "junk.bin", "error": "not an audio file (no WAV, FLAC, OGG, MP3 or AIFF header)", "status": 415}
    assert items[3]["status"] == 422 and "a query needs at least 1 s" in items[3]["error"]
    for item, name in ((items[0], "0.wav"), (items[2], "1.flac")):
        single = httpx.post(f"{built['url']}/v1/search", params={"top_k": 3}, files={"file": (name, c[name].read_bytes())}).json()
        assert item["run_id"] == "r1" and "error" not in item
        _same_hits(item["results"], single["results"])
    too_many = httpx.post(f"{built['url']}/v1/search:batch", files=[("file", (f"{i}.wav", c["short.wav"].read_bytes())) for i in range(5)])
    assert too_many.status_code == 422  # search_api.max_files: 4
    assert too_many.json()["detail"] == "multipart body refused: Too many files. Maximum number of files is 4."
    raw = httpx.post(f"{built['url']}/v1/search:batch", content=c["0.wav"].read_bytes(), headers={"Content-Type": "audio/wav"})
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["detail"]


def _wav_bytes(wave: np.ndarray, sr: int = 22050, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _chunks(data: bytes):
    for i in range(0, len(data), 65536):  # a generator body: sent chunked, with no Content-Length
        yield data[i: i + 65536]


def _bad_requests(clips: dict[str, Path]):
    wav = clips["0.wav"].read_bytes()
    big = _wav_bytes(np.zeros(22050 * 8, np.float32), subtype="FLOAT")  # 8 s of float32: 706 KB, over the 0.5 MB limit
    nan = np.zeros(22050 * 2, np.float32)
    nan[100] = np.nan
    return [
        ("too large", dict(content=big, headers={"Content-Type": "audio/wav"}), 413, "over the 0.5 MB limit"),
        ("too large, chunked", dict(content=_chunks(big), headers={"Content-Type": "audio/wav"}), 413, "over the 0.5 MB limit"),
        ("too short", dict(content=clips["short.wav"].read_bytes(), headers={"Content-Type": "audio/wav"}), 422, "0.50 s of audio; a query needs at least 1 s"),
        ("too long", dict(content=clips["long.wav"].read_bytes(), headers={"Content-Type": "audio/wav"}), 422, "7.00 s of audio; a query may be at most 6 s"),
        ("text as audio", dict(content=b"just some text, not a clip", headers={"Content-Type": "audio/wav"}), 415, "not an audio file"),
        ("json", dict(content=b'{"audio": 1}', headers={"Content-Type": "application/json"}), 415, "Content-Type application/json: expected an audio body"),
        ("a wav header and no samples", dict(content=wav[:60], headers={"Content-Type": "audio/wav"}), 422, "0.00 s of audio; a query needs at least"),
        ("garbage after an ID3 tag", dict(content=b"ID3" + os.urandom(4000), headers={"Content-Type": "audio/mpeg"}), 422, "not a readable audio file"),
        ("garbage after a RIFF header", dict(content=b"RIFF" + os.urandom(4000), headers={"Content-Type": "audio/wav"}), 422, "not a readable audio file"),
        ("empty", dict(content=b"", headers={"Content-Type": "audio/wav"}), 422, "empty body"),
        ("NaN samples", dict(content=_wav_bytes(nan, subtype="FLOAT"), headers={"Content-Type": "audio/wav"}), 422, "NaN or infinite samples"),
        ("form without file", dict(data={"clip": "x"}, files={"other": ("a.wav", wav)}), 422, "no file part in the form (send the clip as field 'file')"),
        ("malformed form", dict(content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=x"}), 422,
         "multipart body refused: Invalid multipart data."),
    ]


def test_bad_input_is_refused_with_its_reason_and_the_server_keeps_serving(built):
    url, good = f"{built['url']}/v1/search", built["clips"]["1.flac"].read_bytes()
    before = httpx.post(url, content=good, headers={"Content-Type": "audio/flac"}).json()["results"]
    for what, request, status, reason in _bad_requests(built["clips"]):
        r = httpx.post(url, **request)
        assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
        assert reason in r.json()["detail"], f"{what}: {r.json()['detail']}"
        after = httpx.post(url, content=good, headers={"Content-Type": "audio/flac"})
        assert after.status_code == 200 and after.json()["results"] == before, what
    bad_k = httpx.post(url, params={"top_k": 0}, content=good, headers={"Content-Type": "audio/flac"})
    assert bad_k.status_code == 422 and bad_k.json()["detail"][0]["loc"] == ["query", "top_k"]
    assert 'status="500"' not in httpx.get(f"{built['url']}/metrics").text


def test_a_client_that_hangs_up_mid_upload_is_a_client_error_not_a_failure(built):
    host, port = built["url"].removeprefix("http://").split(":")
    before = _metric(built["url"], "cloudtune_api_requests_total", 'method="POST",route="/v1/search",status="400"', missing=0)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: test\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n" + b"RIFF" + bytes(996))
    for _ in range(100):
        if _metric(built["url"], "cloudtune_api_requests_total", 'method="POST",route="/v1/search",status="400"', missing=0) > before:
            break
        time.sleep(0.05)
    assert _metric(built["url"], "cloudtune_api_requests_total", 'method="POST",route="/v1/search",status="400"', missing=0) == before + 1
    assert 'status="500"' not in httpx.get(f"{built['url']}/metrics").text


def test_search_api_settings_are_checked_across_keys():
    with pytest.raises(ValueError, match=r"search_api.max_files: expected at most queue_size \(4\)"):
        config.defaults(config.SearchApiSettings, queue_size=4, max_files=8)
    with pytest.raises(ValueError, match=r"search_api.max_clip_s: expected at least min_clip_s \(2.0\), got 1.0"):
        config.defaults(config.SearchApiSettings, min_clip_s=2.0, max_clip_s=1.0)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(built):
    names = ["0.wav", "1.flac", "2.ogg", "3.mp3"]
    url = f"{built['url']}/v1/search"
    alone = {n: httpx.post(url, params={"top_k": TOP_K}, files={"file": (n, built["clips"][n].read_bytes())}).json()["results"] for n in names}
    batches_before = _metric(built["url"], "cloudtune_api_batch_size_count")
    order = [names[i % len(names)] for i in range(24)]

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(url, params={"top_k": TOP_K}, files={"file": (n, built["clips"][n].read_bytes())}) for n in order))

    answers = asyncio.run(burst())
    for name, r in zip(order, answers, strict=True):
        assert r.status_code == 200, r.text
        _same_hits(r.json()["results"], alone[name])
    batches = _metric(built["url"], "cloudtune_api_batch_size_count") - batches_before
    assert 1 <= batches < len(order)  # some clips shared a model batch


def test_the_batcher_searches_concurrent_clips_together_and_a_failing_clip_fails_alone(built):
    searcher = built["searcher"]
    waves = [_read(built, n) for n in ("0.wav", "1.flac", "2.ogg")]
    sizes = []

    def search(ws, top_k):  # the real search, refusing silence: stands for any clip the model fails on
        if any(not w.any() for w in ws):
            raise ValueError("the model cannot take a silent clip")
        return searcher.search(ws, top_k)

    async def run():
        batcher = Batcher(search, max_batch=8, max_wait_s=0.2, queue_size=8, on_batch=sizes.append)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit([waves[0]], 2), batcher.submit([np.zeros(22050, np.float32)], 2),
                                        batcher.submit(waves[1:], 4), return_exceptions=True)
        finally:
            await batcher.stop()

    first, silent, pair = asyncio.run(run())
    assert sizes == [4]  # one batch of all four clips (two top_k groups, queued at once); it failed, so each clip was searched again alone
    assert isinstance(silent, ValueError) and str(silent) == "the model cannot take a silent clip"
    [hits] = first
    _same_hits(hits, searcher.search([waves[0]], 2)[0])
    assert len(pair) == 2 and all(len(h) == 4 for h in pair)
    for got, want in zip(pair, searcher.search(waves[1:], 4), strict=True):
        _same_hits(got, want)


def test_a_forming_batch_waits_only_for_requests_on_their_way(built):
    searcher, wave = built["searcher"], _read(built, "0.wav")
    sizes = []

    async def run():
        batcher = Batcher(searcher.search, max_batch=8, max_wait_s=0.5, queue_size=8, on_batch=sizes.append)
        batcher.start()

        async def decoding_then_submit():  # a request still decoding its clip when the first clip reaches the queue
            with batcher.incoming():
                await asyncio.sleep(0.1)
            return await batcher.submit([wave], 3)

        try:
            started = time.perf_counter()
            await batcher.submit([wave], 3)
            alone = time.perf_counter() - started
            together = await asyncio.gather(batcher.submit([wave], 3), decoding_then_submit())
            return alone, together
        finally:
            await batcher.stop()

    alone, together = asyncio.run(run())
    assert sizes == [1, 2]  # the lone clip went at once; the next one waited for the clip being decoded
    assert alone < 0.5  # not the 0.5 s max_wait
    assert together[0] == together[1]


def _metric(url: str, name: str, labels: str = "", missing: float | None = None) -> float:
    """A series' value from /metrics (``missing`` when it has none yet, else an error)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + (f"{{{labels}}}" if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    if missing is None:
        raise AssertionError(f"no {name}{{{labels}}} in /metrics")
    return missing


def test_health_ready_metrics_and_docs(built):
    url, searcher = built["url"], built["searcher"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz").json()
    assert ready == {"ready": True, "run_id": "r1", "embedder": "mel-stats", "index_kind": "flat", "tracks": len(searcher.index.track_ids),
                     "vectors": searcher.index.index.ntotal}
    httpx.post(f"{url}/v1/search", content=built["clips"]["0.wav"].read_bytes(), headers={"Content-Type": "audio/wav"})
    assert _metric(url, "cloudtune_api_requests_total", 'method="POST",route="/v1/search",status="200"') >= 1
    assert _metric(url, "cloudtune_api_request_seconds_count", 'method="POST",route="/v1/search",status="200"') >= 1
    assert _metric(url, "cloudtune_api_index_vectors") == searcher.index.index.ntotal
    assert _metric(url, "cloudtune_api_index_tracks") == len(searcher.index.track_ids)
    assert _metric(url, "cloudtune_api_published_run", 'embedder="mel-stats",index_kind="flat",run_id="r1"') == 1
    assert _metric(url, "cloudtune_api_queue_depth") == 0 and _metric(url, "cloudtune_api_batch_size_count") >= 1
    search_model, embed_model, _ = httpx.get(f"{url}/v1/models").json()["models"]  # the third, transcribe: tests/test_search_api_models.py
    assert search_model["name"] == "search" and (search_model["run_id"], search_model["embedder"], search_model["index_kind"]) == ("r1", "mel-stats", "flat")
    assert search_model["requests"] >= 1 and search_model["success_rate"] == 1.0 and search_model["latency_ms_p50"] > 0
    assert search_model["max_duration_s"] == 6.0 and search_model["sample_rates"] == f"any (resampled to {searcher.sample_rate} Hz)"
    assert {k: embed_model[k] for k in ("name", "task", "route", "available", "reason")} == {
        "name": "wav2vec2", "task": "embed", "route": "/v1/embed", "available": False,
        "reason": "no model: set wav2vec2.model (a local wav2vec2 directory or hub id)"}
    httpx.get(f"{url}/no/such/path")
    assert _metric(url, "cloudtune_api_requests_total", 'method="GET",route="unmatched",status="404"') >= 1
    assert httpx.get(f"{url}/docs").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/search", "/v1/search:batch", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "audio/wav" in spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]


def test_readyz_says_why_the_published_run_could_not_load(tmp_path):
    """An empty CLOUDTUNE_HOME (the autouse fixture's): the real loader fails, the server stays up and says why."""
    with Server(app_from_config()) as server:
        for _ in range(200):
            r = httpx.get(f"{server.url}/readyz")
            if "failed" in r.json()["detail"]:
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "loading the published run failed: RuntimeError: search: no published run" in r.json()["detail"]
        search = httpx.post(f"{server.url}/v1/search", content=b"RIFF", headers={"Content-Type": "audio/wav"})
        assert search.status_code == 503 and search.headers["Retry-After"] == "1" and search.json()["detail"].startswith("not ready: ")
        assert httpx.get(f"{server.url}/healthz").status_code == 200


class HeldSearcher(Searcher):
    """The real searcher, held at the door of each search until ``gate`` opens (``entered`` says one is waiting): makes the
    queue fill and requests time out deterministically."""

    def hold(self):
        self.gate, self.entered = threading.Event(), threading.Event()
        return self

    def search(self, waves, top_k):
        self.entered.set()
        self.gate.wait(30)
        return super().search(waves, top_k)


def test_a_full_queue_answers_503_a_late_answer_504_a_slow_upload_408(built, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE_HOME", str(built["home"]))
    settings = config.defaults(config.SearchApiSettings, max_batch=1, queue_size=2, max_files=2, request_timeout_s=3.0, retry_after_s=2,
                               device="cpu")
    searcher = HeldSearcher(config.load_index(), device="cpu", embedder_settings=embedder_settings(), audio=config.load_pipeline().audio).hold()
    clip = built["clips"]["0.wav"].read_bytes()
    with Server(create_app(settings, lambda: searcher)) as server:
        server.wait_ready()
        url = f"{server.url}/v1/search"

        async def scenario():
            async with httpx.AsyncClient(timeout=30) as client:
                post = lambda: client.post(url, content=clip, headers={"Content-Type": "audio/wav"})  # noqa: E731
                first = asyncio.create_task(post())
                while not searcher.entered.is_set():  # the first clip is in the model, held
                    await asyncio.sleep(0.01)
                queued = [asyncio.create_task(post()) for _ in range(2)]
                while _metric(server.url, "cloudtune_api_queue_depth") < 2:
                    await asyncio.sleep(0.01)
                refused = await post()
                return refused, await first, await asyncio.gather(*queued)

        refused, first, queued = asyncio.run(scenario())
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert refused.json()["detail"] == "busy: 2 clips are waiting (search_api.queue_size 2); retry later"
        for r in (first, *queued):
            assert r.status_code == 504 and r.json()["detail"] == "not answered within 3 s (search_api.request_timeout_s)"
        searcher.gate.set()  # the model comes back: the server answers again, the timed-out clips were skipped

        def slow():  # the clip in 8 parts, one every 0.5 s: the 3 s deadline passes while it uploads
            for i in range(8):
                time.sleep(0.5)
                yield clip[i * len(clip) // 8: (i + 1) * len(clip) // 8]

        r = httpx.post(url, content=slow(), headers={"Content-Type": "audio/wav"}, timeout=30)
        assert r.status_code == 408 and r.json()["detail"] == "the upload took longer than 3 s (search_api.request_timeout_s)"
        r = httpx.post(url, content=clip, headers={"Content-Type": "audio/wav"})
        assert r.status_code == 200 and r.json()["results"][0]["track_id"] == built["searcher"].search([_read(built, "0.wav")], 10)[0][0]["track_id"]


def _read(built, name: str) -> np.ndarray:
    from pipeline.audio import io as audio_io

    return audio_io.load(built["clips"][name], sr=built["searcher"].sample_rate)[0]


def test_beyond_loopback_an_api_key_is_required_and_checked_in_constant_time(built, monkeypatch, capsys):
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "10.1.2.3", "example.com")))
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", KEY)
    with pytest.raises(ValueError, match=r"^--host 0.0.0.0 is beyond loopback: set an API key in \$CLOUDTUNE_API_KEY"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="has 5 characters; use at least 16"):
        check_bind("127.0.0.1", "short")
    assert authorized(f"Bearer {KEY}", KEY) and authorized(f"bearer {KEY}", KEY)
    assert not any(authorized(h, KEY) for h in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer "))
    monkeypatch.setenv("CLOUDTUNE_HOME", str(built["home"]))
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2  # refused before binding anything
    assert "cloudtune serve: error: --host 0.0.0.0 is beyond loopback: set an API key" in capsys.readouterr().err
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with Server(app_from_config()) as server:  # a key set: the /v1 routes ask for it, even on loopback
        server.wait_ready()
        url, clip = f"{server.url}/v1/search", built["clips"]["0.wav"].read_bytes()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.post(url, content=clip, headers={"Content-Type": "audio/wav", **headers})
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "API key" in r.json()["detail"]
        ok = httpx.post(url, content=clip, headers={"Content-Type": "audio/wav", "Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["run_id"] == "r1"
        assert httpx.get(f"{server.url}/readyz").status_code == 200  # health and metrics stay open to the orchestrator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cloudtune_serve_starts_the_service(built):
    """The command itself, in its own process: it binds loopback, loads the published run and answers like `cloudtune search`."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDTUNE")} | {"CLOUDTUNE_HOME": str(built["home"]),
                                                                                    "CLOUDTUNE__SEARCH_API__DEVICE": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/readyz", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        r = httpx.post(f"{url}/v1/search", params={"top_k": TOP_K}, content=built["clips"]["2.ogg"].read_bytes(), headers={"Content-Type": "audio/ogg"},
                       timeout=60)  # the first search of a fresh process, on a busy machine (the asr worker starts beside it)
        assert r.status_code == 200, r.text
        _same_hits(r.json()["results"], built["searcher"].search([_read(built, "2.ogg")], TOP_K)[0])
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM and "Application shutdown complete." in out, out  # uvicorn re-raises the signal it shut down on
    assert f"Uvicorn running on http://127.0.0.1:{port}" in out


def test_a_published_run_is_swapped_in_under_load_with_no_failed_or_mixed_answer(built, tmp_path, monkeypatch):
    home = tmp_path / "home-copy"
    shutil.copytree(built["home"], home)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__RELOAD_POLL_S", "0.1")
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__DEVICE", "cpu")
    names = ["0.wav", "1.flac", "2.ogg", "3.mp3"]
    runs = {run: Searcher(config.load_index(), run, device="cpu", embedder_settings=embedder_settings(), audio=config.load_pipeline().audio)
            for run in ("r1", "r2")}
    assert not set(runs["r1"].index.track_ids) & set(runs["r2"].index.track_ids)  # an answer shows which index gave it
    want = {(run, n): s.search([_read(built, n)], TOP_K)[0] for run, s in runs.items() for n in names}
    with Server(app_from_config()) as server:
        assert server.wait_ready()["run_id"] == "r1"
        url = f"{server.url}/v1/search"

        async def scenario():
            answers, done = [], asyncio.Event()

            async def caller(client, first):
                i = first
                while not done.is_set():
                    name = names[i % len(names)]
                    r = await client.post(url, params={"top_k": TOP_K}, content=built["clips"][name].read_bytes(), headers={"Content-Type": "audio/wav"})
                    answers.append((name, r))
                    i += 1

            async with httpx.AsyncClient(timeout=30) as client:
                callers = [asyncio.create_task(caller(client, k)) for k in range(6)]
                await asyncio.sleep(0.5)
                await asyncio.to_thread(publish, "r2")  # while the callers keep calling
                for _ in range(300):
                    if (await client.get(f"{server.url}/readyz")).json()["run_id"] == "r2":
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                done.set()
                await asyncio.gather(*callers)
            return answers

        answers = asyncio.run(scenario())
        assert all(r.status_code == 200 for _, r in answers), [r.text for _, r in answers if r.status_code != 200][:3]
        seen = [r.json()["run_id"] for _, r in answers]
        assert set(seen) == {"r1", "r2"} and seen.count("r1") >= 6 and seen.count("r2") >= 6
        for name, r in answers:  # each answer wholly from the index it names
            _same_hits(r.json()["results"], want[(r.json()["run_id"], name)])
        assert _metric(server.url, "cloudtune_api_swaps_total") == 1
        assert _metric(server.url, "cloudtune_api_published_run", 'embedder="mel-stats",index_kind="flat",run_id="r2"') == 1
        assert 'run_id="r1"' not in httpx.get(f"{server.url}/metrics").text


def test_a_published_run_that_cannot_load_leaves_the_old_one_serving(built, tmp_path, monkeypatch):
    home = tmp_path / "home-copy"
    shutil.copytree(built["home"], home)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__RELOAD_POLL_S", "0.1")
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__DEVICE", "cpu")
    with Server(app_from_config()) as server:
        server.wait_ready()
        index = paths.index("r2", "mel-stats", "flat").index  # a broken artifact of the right size: publish's cheap check passes it
        index.write_bytes(b"x" * index.stat().st_size)
        publish("r2")
        for _ in range(200):
            ready = httpx.get(f"{server.url}/readyz").json()
            if "swap_error" in ready:
                break
            time.sleep(0.05)
        assert ready["run_id"] == "r1" and ready["swap_error"].startswith("run published at ") and " not loaded: " in ready["swap_error"]
        assert f"{index}: not a readable FAISS index" in ready["swap_error"]
        r = httpx.post(f"{server.url}/v1/search", content=built["clips"]["0.wav"].read_bytes(), headers={"Content-Type": "audio/wav"})
        assert r.status_code == 200 and r.json()["run_id"] == "r1"
        assert _metric(server.url, "cloudtune_api_swaps_total") == 0

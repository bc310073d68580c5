"""The models behind the HTTP service (`cloudtune serve`, pipeline/api/): routing by declared capabilities, per-model
concurrency limits and timeouts, ``POST /v1/transcribe`` (the PocketSphinx baseline in the model service's worker process, on
espeak-ng speech), ``POST /v1/embed`` (a tiny wav2vec2 in its worker) and ``GET /v1/models``. Real uvicorn servers on free
loopback ports; the module's server starts its speech-recognition worker once and every transcribe test shares it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import time

import httpx
import jiwer
import numpy as np
import pytest
import soundfile as sf
from api_server import ENV, Server, evaluated_run
from test_asr import SENTENCES, WER_BOUND, cli, speak
from test_wav2vec2 import clip as tone
from test_wav2vec2 import request as embed_request
from test_wav2vec2 import save_tiny

from pipeline.api.transcribe import TEMP_PREFIX
from pipeline.cli import main
from pipeline.cli.serve import app_from_config
from pipeline.models.wav2vec2 import Wav2Vec2Features
from pipeline.steps.retrieval import publish
from pipeline.store import db

# the module server's limits (configs/pipeline.yaml search_api, overridden as an operator would): one recognizer call at a
# time and one waiting, so a third concurrent caller is turned away; at most 30 s of audio
LIMITS = {"CLOUDTUNE__SEARCH_API__DEVICE": "cpu", "CLOUDTUNE__SEARCH_API__TRANSCRIBE_CONCURRENCY": "1",
          "CLOUDTUNE__SEARCH_API__TRANSCRIBE_QUEUE_SIZE": "1", "CLOUDTUNE__SEARCH_API__TRANSCRIBE_MAX_S": "30"}
WAV = {"Content-Type": "audio/wav"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Run r1 evaluated and published, three spoken sentences (and a long clip of all three), and the module's server
    (search, no wav2vec2 model, the PocketSphinx worker) once its recognizer has started."""
    root = tmp_path_factory.mktemp("api_models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        mp.delenv("CLOUDTUNE_DB_URL", raising=False)
        for key, value in {**ENV, **LIMITS}.items():
            mp.setenv(key, value)
        evaluated_run(root / "src", "r1", "c", seed=5)
        publish("r1")
        speech = root / "speech"
        speech.mkdir()
        spoken = [speak(text, speech / f"s{i}.wav") for i, text in enumerate(SENTENCES)]
        waves = [sf.read(p, dtype="float32") for p in spoken]
        long = speech / "long.wav"
        sf.write(long, np.concatenate([w for w, _ in waves]), waves[0][1])
        with Server(app_from_config()) as server:
            server.wait_ready()
            _wait_for(server.url, "transcribe")
            db.dispose_engines()
            yield {"root": root, "home": root / "home", "url": server.url, "spoken": spoken, "long": long, "server": server}


def _wait_for(url: str, task: str, timeout_s: float = 120) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        model = _model(url, task)
        if model["available"] or "did not start" in model.get("reason", ""):
            assert model["available"], model["reason"]
            return model
        time.sleep(0.1)
    raise AssertionError(f"{task}: not started after {timeout_s} s: {model}")


def _model(url: str, task: str) -> dict:
    [model] = [m for m in httpx.get(f"{url}/v1/models").json()["models"] if m["task"] == task]
    return model


def _transcribe(url: str, **request) -> httpx.Response:
    return httpx.post(f"{url}/v1/transcribe", timeout=60, **request)


def _temp_files() -> list[str]:
    """The temporary clips of this process's servers still on disk (there should be none once the calls have ended)."""
    return [f for f in os.listdir(tempfile.gettempdir()) if f.startswith(f"{TEMP_PREFIX}{os.getpid()}-")]


def test_transcribe_gives_the_text_of_cloudtune_asr_infer_within_the_wer_bound(served):
    url, spoken = served["url"], served["spoken"]
    p = cli("asr", "infer", *map(str, spoken), "--json")
    assert p.returncode == 0, p.stderr
    want = [json.loads(line) for line in p.stdout.splitlines()]
    got = []
    for path, cli_row in zip(spoken, want, strict=True):
        r = _transcribe(url, content=path.read_bytes(), headers=WAV)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"text", "language", "duration_s", "seconds", "rtf", "backend", "model"}
        assert (body["text"], body["language"], body["duration_s"]) == (cli_row["text"], cli_row["language"], cli_row["duration_s"])
        assert (body["backend"], body["model"]) == ("pocketsphinx", "pocketsphinx-en-us (bundled)")
        assert body["seconds"] > 0 and body["rtf"] == pytest.approx(body["seconds"] / body["duration_s"])
        got.append(body["text"])
    assert jiwer.wer(list(SENTENCES), got) <= WER_BOUND, got
    data = spoken[2].read_bytes()
    form = _transcribe(url, files={"file": ("clip.wav", data)})
    buf = io.BytesIO()
    sf.write(buf, *sf.read(spoken[2], dtype="float32"), format="FLAC")  # lossless: the same samples, another container
    flac = _transcribe(url, content=buf.getvalue(), headers={"Content-Type": "audio/flac"}, params={"language": "English"})
    for r in (form, flac):
        assert r.status_code == 200 and r.json()["text"] == want[2]["text"], r.text
    assert _temp_files() == []


def _wav_bytes(wave: np.ndarray, sr: int = 16000, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _bad_requests():
    """(what, request, status, reason, reaches the worker)"""
    nan = np.full(16000, 0.1, np.float32)
    nan[100] = np.nan
    noise = np.random.default_rng(0).normal(0, 0.003, 31 * 16000).astype(np.float32)  # 31 s: over transcribe_max_s, from its header
    good = _wav_bytes(np.full(16000, 0.1, np.float32))
    return [
        ("empty", dict(content=b"", headers=WAV), 422, "empty body: send the audio clip", False),
        ("text as audio", dict(content=b"just some text, not a clip" * 10, headers=WAV), 415,
         "not an audio file (no WAV, FLAC, OGG, MP3 or AIFF header)", False),
        ("json", dict(content=b'{"audio": 1}', headers={"Content-Type": "application/json"}), 415,
         "Content-Type application/json: expected an audio body", False),
        ("too short", dict(content=_wav_bytes(np.full(800, 0.1, np.float32)), headers=WAV), 422,
         "0.05 s of audio; transcribe needs at least 0.1 s (asr.min_seconds)", False),
        ("too long", dict(content=_wav_bytes(noise, subtype="PCM_16"), headers=WAV), 422,
         "31.00 s of audio; transcribe takes at most 30 s (search_api.transcribe_max_s)", False),
        ("garbage after a RIFF header", dict(content=b"RIFF" + os.urandom(4000), headers=WAV), 422, "not a readable audio file", False),
        ("form without file", dict(files={"other": ("a.wav", good)}), 422, "no file part in the form (send the clip as field 'file')", False),
        ("silent", dict(content=_wav_bytes(np.zeros(16000, np.float32), subtype="PCM_16"), headers=WAV), 422,
         "digital silence (every sample is 0) is below asr.silence_rms_dbfs=-90", True),
        ("NaN samples", dict(content=_wav_bytes(nan), headers=WAV), 422, "1 NaN/Inf sample(s)", True),
        ("a language the backend lacks", dict(content=good, headers=WAV, params={"language": "Chinese"}), 422,
         "pocketsphinx: knows only English", True),
    ]


def test_bad_input_is_refused_with_its_reason_and_the_server_keeps_serving(served):
    url, clip = served["url"], served["spoken"][0].read_bytes()
    want = _transcribe(url, content=clip, headers=WAV).json()["text"]
    for what, request, status, reason, reaches in _bad_requests():
        before = _model(url, "transcribe")["requests"]
        r = _transcribe(url, **request)
        assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
        assert reason in r.json()["detail"] and "\n" not in r.json()["detail"], f"{what}: {r.json()['detail']}"
        assert _model(url, "transcribe")["requests"] == before + reaches, what  # refused before the worker unless it had to decode
        if reaches:
            after = _transcribe(url, content=clip, headers=WAV)
            assert after.status_code == 200 and after.json()["text"] == want, what
    transcriber = _model(url, "transcribe")
    assert transcriber["restarts"] == 0 and transcriber["breaker"] == "closed" and transcriber["success_rate"] == 1.0
    assert _temp_files() == []
    assert 'status="500"' not in httpx.get(f"{url}/metrics").text


def test_a_call_past_its_timeout_is_a_504_and_the_worker_keeps_serving(served):
    url, clip = served["url"], served["spoken"][1].read_bytes()
    [model] = [m for m in served["server"].app.state.service.models if m.task == "transcribe"]
    timeouts = _model(url, "transcribe")["timeouts"]
    model.timeout_s = 0.001  # search_api.transcribe_timeout_s, set on the live model: no decode answers that fast
    try:
        late = _transcribe(url, content=clip, headers=WAV)
    finally:
        model.timeout_s = 30.0
    assert late.status_code == 504 and late.json()["detail"] == "transcribe: not answered within 0.001 s (search_api.transcribe_timeout_s)"
    r = _transcribe(url, content=clip, headers=WAV)
    assert r.status_code == 200 and jiwer.wer(SENTENCES[1], r.json()["text"]) <= 0.5, r.text
    after = _model(url, "transcribe")
    assert after["timeouts"] == timeouts + 1 and after["restarts"] == 0  # the same worker answered: not killed, not restarted
    assert after["in_flight"] == 0 and _temp_files() == []  # the late call ended and its temporary clip is gone


def test_the_concurrency_limit_queues_one_caller_and_turns_the_next_away(served):
    """transcribe_concurrency 1, transcribe_queue_size 1: with a long clip in the worker and one caller waiting, a third
    caller gets 503 with Retry-After at once; the first two are answered."""
    url, long, short = served["url"], served["long"].read_bytes(), served["spoken"][2].read_bytes()

    async def scenario():
        async with httpx.AsyncClient(timeout=60) as client:
            post = lambda data: client.post(f"{url}/v1/transcribe", content=data, headers=WAV)  # noqa: E731
            first = asyncio.create_task(post(long))
            await _until(client, url, lambda m: m["in_flight"] == 1)
            second = asyncio.create_task(post(short))
            await _until(client, url, lambda m: m["queued"] == 1)
            third = await post(short)
            return third, await first, await second

    third, first, second = asyncio.run(scenario())
    assert third.status_code == 503 and third.headers["Retry-After"] == "1"
    assert third.json()["detail"] == ("transcribe: busy: 1 call(s) running and 1 waiting (search_api.transcribe_concurrency 1, "
                                      "search_api.transcribe_queue_size 1); retry later")
    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["duration_s"] == pytest.approx(sf.info(served["long"]).duration, abs=0.01)
    assert jiwer.wer(" ".join(SENTENCES), first.json()["text"]) <= WER_BOUND
    assert _model(url, "transcribe")["busy_refusals"] >= 1


async def _until(client: httpx.AsyncClient, url: str, check, timeout_s: float = 30) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        [model] = [m for m in (await client.get(f"{url}/v1/models")).json()["models"] if m["task"] == "transcribe"]
        if check(model):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"transcribe: not reached within {timeout_s} s: {model}")


def test_models_lists_search_embed_and_transcribe_with_capabilities_limits_and_figures(served):
    url = served["url"]
    assert _transcribe(url, content=served["spoken"][0].read_bytes(), headers=WAV).status_code == 200
    assert httpx.post(f"{url}/v1/search", content=served["spoken"][0].read_bytes(), headers=WAV).status_code == 200
    search, embed, transcribe = httpx.get(f"{url}/v1/models").json()["models"]
    assert [(m["name"], m["task"], m["route"]) for m in (search, embed, transcribe)] == [
        ("search", "search", "/v1/search"), ("wav2vec2", "embed", "/v1/embed"), ("pocketsphinx", "transcribe", "/v1/transcribe")]
    for m in (search, embed, transcribe):
        assert {"content_types", "formats", "sample_rates", "min_duration_s", "max_duration_s", "concurrency", "timeout_s"} <= set(m), m["name"]
    assert search["available"] and search["run_id"] == "r1" and search["requests"] >= 1 and search["latency_ms_p95"] > 0
    assert not embed["available"] and embed["reason"].startswith("no model: set wav2vec2.model")
    assert (embed["content_types"], embed["concurrency"], embed["timeout_s"]) == (["application/json", "application/octet-stream"], 1, 10.0)
    assert transcribe["available"] and (transcribe["backend"], transcribe["model"]) == ("pocketsphinx", "pocketsphinx-en-us (bundled)")
    assert (transcribe["concurrency"], transcribe["queue_size"], transcribe["timeout_s"]) == (1, 1, 30.0)
    assert (transcribe["min_duration_s"], transcribe["max_duration_s"]) == (0.1, 30.0)
    assert "audio/flac" in transcribe["content_types"] and "multipart/form-data" in transcribe["content_types"]
    assert transcribe["formats"] == ["WAV", "FLAC", "OGG", "MP3", "AIFF"] and transcribe["sample_rates"] == "any (resampled to 16000 Hz)"
    assert transcribe["requests"] >= 1 and 0 < transcribe["success_rate"] <= 1 and transcribe["throughput_rps"] > 0
    assert 0 < transcribe["latency_ms_p50"] <= transcribe["latency_ms_p95"] and transcribe["audio_seconds_per_s"] > 1
    assert transcribe["isolated"] and transcribe["worker_peak_rss_mb"] > 0 and transcribe["breaker"] == "closed"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "audio/wav" in spec["paths"]["/v1/transcribe"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize(("env", "reason"), [
    ({"CLOUDTUNE__SEARCH_API__TRANSCRIBE": "false"}, "transcribe: off: search_api.transcribe is false"),
    ({"CLOUDTUNE__ASR__BACKEND": "qwen3-asr"}, "transcribe: qwen3_asr.model is not set: pass --model DIR"),
])
def test_transcribe_not_configured_is_a_501_with_the_reason(served, monkeypatch, env, reason):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with Server(app_from_config()) as server:  # no published run in this test's home: search is not ready, transcribe not configured
        r = _transcribe(server.url, content=served["spoken"][0].read_bytes(), headers=WAV)
        assert r.status_code == 501 and r.json()["detail"].startswith(reason), r.text
        model = _model(server.url, "transcribe")
        assert not model["available"] and reason.removeprefix("transcribe: ") in model["reason"]
        assert not _model(server.url, "search")["available"]  # listed all the same, with why


def test_embed_is_the_cloudtune_embed_contract_through_the_model_service(served, tmp_path, monkeypatch, capsys):
    """A tiny random wav2vec2 (the wav2vec2 tests' own) in the model service's worker process: the same vector as in-process,
    the same one-line reasons as `cloudtune embed` for bad input, and the worker keeps serving."""
    model = save_tiny(tmp_path / "w2v", layer_norm=True)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(served["home"]))
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__DEVICE", "cpu")
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__TRANSCRIBE", "false")  # this server's model is wav2vec2 (the module's runs the recognizer)
    for key, value in {"MODEL": str(model), "DTYPE": "float32", "THREADS": "1", "MAX_SECONDS": "2.0"}.items():
        monkeypatch.setenv(f"CLOUDTUNE__WAV2VEC2__{key}", value)
    wave, as_json = tone(0.5, 22050, seed=7), {"Content-Type": "application/json"}
    unconfigured = httpx.post(f"{served['url']}/v1/embed", content=embed_request(wave, 22050), headers=as_json)  # the main server has no model
    assert unconfigured.status_code == 501 and unconfigured.json()["detail"] == "embed: no model: set wav2vec2.model (a local wav2vec2 directory or hub id)"
    with Server(app_from_config()) as server:
        server.wait_ready()
        url = f"{server.url}/v1/embed"
        for _ in range(1200):  # the worker process starts and loads the model
            r = httpx.post(url, content=embed_request(wave, 22050), headers=as_json, timeout=60)
            if r.status_code != 503:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        in_process = Wav2Vec2Features(str(model), device="cpu", dtype="float32").embed_one(wave, 22050)
        np.testing.assert_allclose(r.json()["embedding"], in_process, rtol=1e-5, atol=1e-6)
        for i, body in enumerate(["", "not json", embed_request(tone(3.0, 16000), 16000), '{"audio": {"array": [0.1, 0.2], "sampling_rate": -5}}']):
            r = httpx.post(url, content=body, headers=as_json)
            (tmp_path / f"{i}.json").write_text(body)
            capsys.readouterr()
            assert main(["embed", "--input", str(tmp_path / f"{i}.json")]) == 2
            assert r.status_code == 422 and capsys.readouterr().err == f"cloudtune embed: error: {r.json()['detail']}\n"
        assert "wav2vec2.max_seconds" in httpx.post(url, content=embed_request(tone(3.0, 16000), 16000), headers=as_json).json()["detail"]
        again = httpx.post(url, content=embed_request(wave, 22050), headers=as_json)
        assert again.status_code == 200  # the worker still serves after the bad input
        embed_model = httpx.get(f"{server.url}/v1/models").json()["models"][1]
        assert embed_model["available"] and embed_model["loaded"] and embed_model["dim"] == 32 and embed_model["isolated"]
        assert embed_model["requests"] == 2 and embed_model["success_rate"] == 1.0 and embed_model["breaker"] == "closed"  # bad input never reached it
        assert embed_model["max_duration_s"] == 2.0 and embed_model["worker_peak_rss_mb"] > 0
        np.testing.assert_allclose(again.json()["embedding"], in_process, rtol=1e-5, atol=1e-6)

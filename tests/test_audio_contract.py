"""The audio request contract on its own: {"audio": {"array": [...], "sampling_rate": N}} -> (float32 wave, rate) or a one-line reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_wav2vec2 import BAD_INPUTS

from pipeline.audio.contract import check_audio, parse_request


@pytest.mark.parametrize("text,reason", BAD_INPUTS)
def test_bad_requests_give_the_reason_cloudtune_embed_prints(text, reason):
    with pytest.raises(ValueError) as err:
        parse_request(text)
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_a_good_request_is_a_float32_wave_and_a_whole_rate():
    wave, sr = parse_request(json.dumps({"audio": {"array": [0, 0.5, -1], "sampling_rate": 16000.0}}))
    assert wave.dtype == np.float32 and wave.tolist() == [0, 0.5, -1] and sr == 16000 and type(sr) is int
    wave, sr = check_audio(np.array([1, 2], dtype=np.int16), np.int64(8000))
    assert wave.dtype == np.float32 and wave.tolist() == [1, 2] and sr == 8000
    same = np.zeros(3, np.float32)
    assert check_audio(same, 8000)[0] is same  # float32 input is not copied


def test_arrays_limits_and_field_names():
    with pytest.raises(ValueError, match=r"^clip.array: expected a flat list of numbers, got an array of shape \[2, 2\] and dtype float32$"):
        check_audio(np.zeros((2, 2), np.float32), 16000, where="clip")
    with pytest.raises(ValueError, match=r"^audio.array: expected a flat list of numbers, got an array of shape \[2\] and dtype <U1$"):
        check_audio(np.array(["a", "b"]), 16000)
    with pytest.raises(ValueError, match=r"^audio.array\[1\]: not finite \(nan\)$"):
        check_audio(np.array([0.0, np.nan]), 16000)
    with pytest.raises(ValueError, match=r"^audio.array\[0\]: 1e\+300 does not fit in float32$"):
        check_audio(np.array([1e300]), 16000)
    request = json.dumps({"audio": {"array": [0.0] * 8, "sampling_rate": 4}})
    assert parse_request(request, max_seconds=2)[0].size == 8
    with pytest.raises(ValueError, match=r"^audio.array: 2.0 s of audio is over the 1 s limit$"):
        parse_request(request, max_seconds=1)
    with pytest.raises(ValueError, match=r"^audio.array: 2.0 s of audio is over the 1.5 s limit \(wav2vec2.max_seconds\)$"):
        parse_request(request, max_seconds=1.5, limit_name="wav2vec2.max_seconds")

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import io as audio_io
from pipeline.audio.fixtures import tone
from pipeline.fsutil import atomic_path


def test_to_mono_averages_channels():
    stereo = np.stack([np.ones(10, np.float32), np.zeros(10, np.float32)], axis=1)
    np.testing.assert_allclose(audio_io.to_mono(stereo), 0.5)
    assert audio_io.to_mono(stereo[:, :1]).shape == (10,)


def test_resample_changes_length_and_keeps_pitch():
    sr_in, sr_out = 44100, 24000
    wave = np.sin(2 * np.pi * 1000 * np.arange(sr_in) / sr_in).astype(np.float32)
    out = audio_io.resample(wave, sr_in, sr_out)
    assert out.dtype == np.float32 and abs(out.size - sr_out) <= 1
    peak_bin = np.argmax(np.abs(np.fft.rfft(out)))
    assert abs(peak_bin * sr_out / out.size - 1000) < 2


def test_normalize_hits_target_and_respects_ceiling():
    wave = tone(2.0, 24000)[:, 0] * 0.01
    out = audio_io.normalize(wave, target_rms_dbfs=-20.0, peak_ceiling_dbfs=-1.0)
    assert audio_io.rms_dbfs(out) == pytest.approx(-20.0, abs=0.01)
    spiky = np.zeros(24000, np.float32)
    spiky[::1000] = 1.0  # crest factor too high to reach -20 dBFS under a -1 dBFS peak
    out = audio_io.normalize(spiky, target_rms_dbfs=-20.0, peak_ceiling_dbfs=-1.0)
    assert np.max(np.abs(out)) == pytest.approx(10 ** (-1 / 20), rel=1e-5)


def test_rms_dbfs_flags_silence_and_non_finite():
    assert audio_io.rms_dbfs(np.zeros(10, np.float32)) == -np.inf
    assert np.isnan(audio_io.rms_dbfs(np.array([0.1, np.nan], np.float32)))


@pytest.mark.parametrize(
    "head,expected",
    [
        (b"RIFF\x00\x00\x00\x00WAVE", "WAV"), (b"fLaC\x00", "FLAC"), (b"OggS\x00", "OGG"), (b"ID3\x04", "MP3"),
        (b"\xff\xfb\x90", "MP3"), (b"hello", None), (b"", None),
    ],
)
def test_sniff_container(head, expected):
    assert audio_io.sniff_container(head) == expected


def test_write_flac_is_atomic_and_load_resamples(tmp_path):
    path = tmp_path / "x.flac"
    audio_io.write_flac(path, tone(1.0, 24000)[:, 0], 24000)
    assert sf.info(path).samplerate == 24000
    assert [p.name for p in tmp_path.iterdir()] == ["x.flac"]  # no temp file left behind
    wave, sr = audio_io.load(path, sr=16000)
    assert sr == 16000 and abs(wave.size - 16000) <= 1


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]

import json

import numpy as np
import soundfile as sf

from pipeline.audio.synth import build_catalog


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.flac"))}


def test_same_seed_gives_identical_audio_in_any_worker_count(tmp_path):
    a = build_catalog(tmp_path / "a", tracks=4, seconds=3, seed=7, workers=1, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    b = build_catalog(tmp_path / "b", tracks=4, seconds=3, seed=7, workers=2, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    c = build_catalog(tmp_path / "c", tracks=4, seconds=3, seed=8, workers=1, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    assert _bytes(a) == _bytes(b)
    assert _bytes(a)["track_0000.flac"] != _bytes(c)["track_0000.flac"]


def test_catalog_is_varied_music_with_shared_motifs(tmp_path):
    out = build_catalog(tmp_path / "cat", tracks=12, seconds=4, seed=0, shared_motif_ratio=0.6, sample_rate=44100, channels=2)
    manifest = json.loads((out / "catalog.json").read_text())
    specs = manifest["tracks"]
    assert len(specs) == 12 and len(list(out.glob("*.flac"))) == 12
    assert len({s["tempo_bpm"] for s in specs}) == 12
    assert len({s["key"] for s in specs}) >= 4 and len({s["lead"] for s in specs}) >= 3
    assert len({tuple(s["progression"]) for s in specs}) >= 3 and len({s["drums"] for s in specs}) >= 3
    motifs = [s["motif_id"] for s in specs if s["motif_id"] is not None]
    assert len(motifs) > len(set(motifs)), "some tracks must quote the same shared motif"
    for spec in specs:
        audio, sr = sf.read(out / spec["file"])
        assert sr == 44100 and audio.shape == (4 * 44100, 2)
        assert 0.85 < np.max(np.abs(audio)) <= 0.91
        assert np.std(audio) > 0.02  # not silence
        # music, not noise: the spectrum is peaky (tonal) rather than flat
        spectrum = np.abs(np.fft.rfft(audio[:, 0]))
        assert np.percentile(spectrum, 99.5) > 20 * np.median(spectrum)


def test_tracks_differ_from_each_other(tmp_path):
    out = build_catalog(tmp_path / "cat", tracks=3, seconds=3, seed=1, channels=1, sample_rate=44100, shared_motif_ratio=0.5)
    waves = [sf.read(p)[0] for p in sorted(out.glob("*.flac"))]
    assert waves[0].ndim == 1
    for i in range(3):
        for j in range(i + 1, 3):
            corr = np.corrcoef(waves[i], waves[j])[0, 1]
            assert abs(corr) < 0.5

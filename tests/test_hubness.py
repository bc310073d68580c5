"""Hub scores (pipeline/embed/hubness.py): the probes, the scores, and embed-catalog writing them beside the catalog's vectors for
the matcher (the penalty itself: tests/test_match.py)."""

from dataclasses import replace

import numpy as np
import pytest

from pipeline import config, paths
from pipeline.audio.synth import build_catalog
from pipeline.embed.catalog import embed_catalog, load_embeddings, load_hubness
from pipeline.embed.hubness import PROBE_RMS, hub_scores, probe_waves
from pipeline.embed.registry import get_embedder
from pipeline.index.faiss_index import build_index, load_index
from pipeline.steps.ingest import ingest
from pipeline.steps.retrieval import embedder_settings


def test_hub_scores_are_each_rows_mean_of_its_k_highest_similarities():
    rng = np.random.default_rng(1)
    vectors, probes = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    sims = vectors @ probes.T
    assert hub_scores(vectors, probes, 3) == pytest.approx(np.sort(sims, 1)[:, -3:].mean(1), abs=1e-5)
    assert hub_scores(vectors, probes, 20) == pytest.approx(sims.mean(1), abs=1e-5)  # k beyond the probes: all of them


def test_probes_are_seeded_noise_of_each_color_at_one_level():
    waves = probe_waves(4000, 3, seed=0)
    assert len(waves) == 9 and all(len(w) == 4000 and w.dtype == np.float32 for w in waves)
    assert all(np.sqrt(np.mean(w.astype(np.float64) ** 2)) == pytest.approx(PROBE_RMS, rel=1e-3) for w in waves)
    spectra = [np.abs(np.fft.rfft(w)) for w in waves[::3]]  # one of each: white, pink, brown
    low_share = [s[1:50].sum() / s[1:].sum() for s in spectra]
    assert low_share[0] < low_share[1] < low_share[2]  # ever more of the energy at low frequencies
    assert all(np.array_equal(a, b) for a, b in zip(waves, probe_waves(4000, 3, seed=0), strict=True))


def test_embed_catalog_writes_hub_scores_and_measures_them_again_only_when_their_settings_change(tmp_path):
    src = build_catalog(tmp_path / "src", tracks=3, seconds=6, seed=3, sample_rate=16000, channels=1, shared_motif_ratio=0.0)
    ingest([src], catalog="c", workers=1, progress=False)
    mel = get_embedder("mel-stats", **embedder_settings())
    index_s = config.load_index()
    hubs = config.HubSettings(noise_probes=4, k=3, seed=0)
    files = paths.embeddings("r", "mel-stats")
    first = embed_catalog("r", mel, ["c"], settings=index_s.segments, hubs=hubs, progress=False)
    vectors, _, _ = load_embeddings(files)
    waves = probe_waves(round(index_s.segments.window_s * mel.sample_rate), 4, seed=0)
    assert first["hubness"]["probes"] == 12 and first["hubs"]["k"] == 3
    assert load_hubness(files, first) == pytest.approx(hub_scores(vectors, mel.embed(waves), 3), abs=1e-6)

    assert embed_catalog("r", mel, ["c"], settings=index_s.segments, hubs=hubs, progress=False) == first  # up to date: nothing done
    wider = embed_catalog("r", mel, ["c"], settings=index_s.segments, hubs=replace(hubs, k=8), progress=False)
    assert wider["created_at"] == first["created_at"] and wider["hubs"]["k"] == 8  # the vectors kept: only the scores measured again
    assert load_hubness(files, wider) == pytest.approx(hub_scores(vectors, mel.embed(waves), 8), abs=1e-6)

    build_index("r", "mel-stats", "flat", index_s)
    penalised = replace(index_s.search, hub_penalty=0.5)
    assert load_index("r", mel.manifest(), "flat", penalised).table.hub == pytest.approx(load_hubness(files, wider))
    none = embed_catalog("r", mel, ["c"], settings=index_s.segments, hubs=None, progress=False)
    assert none["hubs"] is None and not files.hubness.exists()
    assert load_index("r", mel.manifest(), "flat", replace(index_s.search, hub_penalty=0.0)).table.hub is None  # none needed
    with pytest.raises(ValueError, match="no hub scores"):
        load_index("r", mel.manifest(), "flat", penalised)

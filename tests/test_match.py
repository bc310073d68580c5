"""Sequence matching (pipeline/index/match.py) on crafted catalogs in a real FAISS index, and the query segmentation it relies on."""

import numpy as np
import pytest

from pipeline import config
from pipeline.embed.segments import QuerySegments, Segmentation, embed_queries, embed_query_rates
from pipeline.index.faiss_index import TrackIndex, make_index
from pipeline.index.match import SegmentTable

HOP, WINDOW, DIM = 0.5, 1.0, 32  # the fingerprint's grid: 1 s windows every 0.5 s


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _catalog(tracks=30, segments=40, seed=0):
    """Independent random unit vectors: ``segments`` per track on the HOP grid. Returns (vectors, track of each, start of each)."""
    rng = np.random.default_rng(seed)
    vectors = _unit(rng.normal(size=(tracks * segments, DIM)))
    return vectors, np.repeat(np.arange(tracks), segments), np.tile(np.arange(segments) * HOP, tracks)


def _search(**changes) -> config.SearchSettings:
    return config.SearchSettings(**{"segments_k": 200, "match_k": 20, "match_drift": 1, "rates": (1.0,), "rates_max_s": 1e9, "rate_penalty": 0.0,
                                    "min_query_segments": 1,
                                    "query_hop_steps": 1, "top_k": 10, "hub_penalty": 0.0, **changes})


def _index(vectors, track, start, drift=1, match_k=20, segments_k=200, hub=None, hub_penalty=0.0) -> TrackIndex:
    index, _ = make_index("flat", np.ascontiguousarray(vectors), {})
    table = SegmentTable.build(vectors, track, start, Segmentation(WINDOW, HOP, HOP), hub)
    settings = _search(segments_k=segments_k, match_k=match_k, match_drift=drift, hub_penalty=hub_penalty)
    return TrackIndex(index, {}, np.array([f"t{i}" for i in range(track.max() + 1)]), track, settings, table)


def _query(vectors) -> QuerySegments:
    vectors = _unit(vectors)
    return QuerySegments(vectors, np.arange(len(vectors)) * HOP)


def _rows(track, start, t, positions):
    return [int(np.flatnonzero((track == t) & np.isclose(start, p * HOP))[0]) for p in positions]


@pytest.mark.parametrize("drift", [0, 1])
def test_a_one_segment_query_scores_each_track_by_its_best_segment(drift):
    vectors, track, start = _catalog()
    idx = _index(vectors, track, start, drift=drift)
    rng = np.random.default_rng(1)
    queries = _unit(vectors[rng.choice(len(vectors), 25)] + 0.4 * rng.normal(size=(25, DIM)))
    matched = idx.match([QuerySegments(q[None], np.zeros(1)) for q in queries], top_k=5)
    for got, expected in zip(matched, idx.search_indices(queries, top_k=5), strict=True):  # the best-segment rule of collapse_to_tracks
        assert [t for t, _, _ in got] == [t for t, _ in expected]
        assert [s for _, s, _ in got] == pytest.approx([s for _, s in expected], abs=1e-5)
    best = queries @ vectors.T
    for q, got in enumerate(matched):  # the offset is where that best segment starts
        for t, s, offset in got:
            mine = np.flatnonzero(track == t)
            assert offset == start[mine[np.argmax(best[q, mine])]] and s == pytest.approx(best[q, mine].max(), abs=1e-5)


def test_a_clip_from_inside_a_track_finds_the_track_and_where_it_starts():
    vectors, track, start = _catalog()
    idx = _index(vectors, track, start)
    rng = np.random.default_rng(2)
    clip = vectors[_rows(track, start, 7, range(10, 19))] + 0.2 * rng.normal(size=(9, DIM))  # 9 noisy segments from 5.0 s on
    (t, score, offset), *rest = idx.match([_query(clip)], top_k=3)[0]
    assert (t, offset) == (7, 5.0) and score > rest[0][1] + 0.3


def test_a_longer_query_beats_a_single_segment_that_alone_points_elsewhere():
    vectors, track, start = _catalog()
    rng = np.random.default_rng(3)
    truth = _rows(track, start, 0, range(5, 9))  # the clip: track 0 from 2.5 s, four segments
    clip = vectors[truth] + 0.35 * rng.normal(size=(4, DIM)).astype(np.float32)
    vectors = vectors.copy()
    vectors[_rows(track, start, 1, [20])[0]] = _unit(clip[0])  # track 1 holds the clip's first segment itself (a shared motif)
    idx = _index(vectors, track, start)
    alone = idx.match([_query(clip[:1])], top_k=3)[0]
    assert alone[0][0] == 1 and alone[0][1] == pytest.approx(1.0, abs=1e-5)  # one segment: track 1, exactly
    whole = idx.match([_query(clip)], top_k=3)[0]
    assert whole[0][:1] == (0,) and whole[0][2] == 2.5 and whole[0][1] > whole[1][1]  # the sequence: track 0, at 2.5 s


def test_drift_tolerance_follows_a_clip_whose_later_segments_are_a_hop_ahead():
    vectors, track, start = _catalog()
    rng = np.random.default_rng(4)
    played = _rows(track, start, 3, [10, 11, 12, 13, 15, 16, 17])  # played fast: from the 5th segment on, one hop ahead
    clip = vectors[played] + 0.05 * rng.normal(size=(7, DIM)).astype(np.float32)
    vectors = vectors.copy()
    lookalike = _rows(track, start, 9, range(4, 11))  # track 9 holds a weaker copy of the whole clip, on the grid
    vectors[lookalike] = _unit(clip + 0.15 * rng.normal(size=(7, DIM)))  # similarity about 0.75 per segment
    strict = _index(vectors, track, start, drift=0).match([_query(clip)], top_k=2)[0]
    assert strict[0][0] == 9  # without drift the true track loses three of its seven segments, and the look-alike wins
    (t, score, offset), (other, other_score, _) = _index(vectors, track, start, drift=1).match([_query(clip)], top_k=2)[0]
    assert (t, offset, other) == (3, 5.0, 9) and score > 0.95 > other_score


def test_segments_past_the_end_of_a_track_are_missing_not_zero():
    vectors, track, start = _catalog()
    rng = np.random.default_rng(5)
    idx = _index(vectors, track, start)
    tail = vectors[_rows(track, start, 4, range(36, 40))]  # the last 2 s of track 4, then 1 s of something else
    (t, score, offset), *_ = idx.match([_query(np.concatenate([tail, rng.normal(size=(2, DIM))]))], top_k=3)[0]
    assert (t, offset) == (4, 18.0) and score == pytest.approx(1.0, abs=1e-5)  # the mean over the four segments that meet the track
    mostly_outside = np.concatenate([tail[2:], rng.normal(size=(4, DIM))])  # 2 of 6 segments in the track: under half, no candidate
    assert all(s < 0.6 for _, s, _ in idx.match([_query(mostly_outside)], top_k=10)[0])


def test_a_hub_penalty_turns_a_noisy_query_away_from_a_segment_that_lies_near_noise():
    vectors, track, start = _catalog()
    rng = np.random.default_rng(6)
    noise = _unit(rng.normal(size=DIM))  # where noise embeds
    truth = _rows(track, start, 2, range(8, 12))  # the clip: track 2 from 4.0 s, under loud noise
    clip = _unit(vectors[truth] + 1.5 * noise)
    vectors = vectors.copy()
    vectors[_rows(track, start, 5, range(4))] = _unit(noise + 0.05 * rng.normal(size=(4, DIM)))  # track 5 opens with a wash of noise
    hub = np.clip(vectors @ noise, 0, None).astype(np.float32)  # each segment's hub score: its similarity to the one noise probe
    plain = _index(vectors, track, start, drift=0, hub=hub).match([_query(clip)], top_k=30)[0]
    assert plain[0][0] == 5  # the noise in the clip meets the noise in track 5 better than the music meets track 2
    penalised = _index(vectors, track, start, drift=0, hub=hub, hub_penalty=0.5).match([_query(clip)], top_k=30)[0]
    assert penalised[0][0] == 2 and penalised[0][2] == 4.0
    exact = np.mean(np.sum(clip * vectors[truth], 1) - 0.5 * hub[truth])  # each similarity less 0.5 x its segment's hub score
    assert penalised[0][1] == pytest.approx(exact, abs=1e-5)
    with pytest.raises(ValueError, match="no hub scores"):
        _index(vectors, track, start, hub_penalty=0.5).match([_query(clip)], top_k=3)


class _Lengths:
    """A stand-in embedder that records its calls and writes each piece's length (in samples) into its vector."""

    name, dim, sample_rate = "lengths", 2, 10

    def __init__(self):
        self.calls = []

    def embed(self, waves):
        self.calls.append(len(waves))
        return np.array([[len(w), 1.0] for w in waves], np.float32)


def test_queries_are_cut_like_the_catalog_and_embedded_in_one_call():
    emb = _Lengths()
    waves = [np.zeros(55, np.float32), np.zeros(7, np.float32), np.zeros(30, np.float32)]  # 5.5 s, 0.7 s, 3 s at 10 Hz
    got = embed_queries(emb, waves, Segmentation(window_s=5.0, hop_s=1.0, min_s=1.0))
    assert emb.calls == [4]
    assert [q.starts_s.tolist() for q in got] == [[0.0, 0.5], [0.0], [0.0]]  # the tail window ends at the end; shorter: one segment
    assert [q.vectors[:, 0].tolist() for q in got] == [[50, 50], [7], [30]]  # below min_s and below a window: the whole query
    assert Segmentation.of({"window_s": 1, "hop_s": 0.5, "min_s": 0.5, "batch_size": 64, "sample_rate": 24000}) == Segmentation(1.0, 0.5, 0.5)


def test_a_query_cut_every_other_catalog_hop_stays_on_its_grid_and_finds_the_offset():
    emb = _Lengths()
    catalog = Segmentation(window_s=1.0, hop_s=0.5, min_s=0.5)
    ((every,),), ((other,),) = [embed_query_rates(emb, [np.zeros(50, np.float32)], catalog, _search(query_hop_steps=h)) for h in (1, 2)]
    assert every.starts_s.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]  # 5 s at 10 Hz: the catalog's grid
    assert other.starts_s.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and emb.calls == [9, 5]  # every other of its starts
    with pytest.raises(ValueError, match="at least 1"):
        _search(query_hop_steps=0)
    vectors, track, start = _catalog()  # a catalog on the 0.5 s grid; a query of every other segment (1 s apart) from 5.5 s on
    idx = _index(vectors, track, start, drift=0)
    rng = np.random.default_rng(4)
    clip = vectors[_rows(track, start, 11, range(11, 21, 2))] + 0.2 * rng.normal(size=(5, DIM))
    (t, score, offset), *rest = idx.match([QuerySegments(_unit(clip), np.arange(5) * 2 * HOP)], top_k=3)[0]
    assert (t, offset) == (11, 5.5) and score > rest[0][1] + 0.2


def test_a_short_query_is_cut_more_densely_until_it_has_enough_segments():
    from pipeline.embed.segments import query_spans

    s, sr = Segmentation(window_s=1.0, hop_s=0.5, min_s=0.5), 100
    assert query_spans(200, sr, s) == [(0, 100), (50, 150), (100, 200)]  # 2 s at the catalog's hop: 3 windows
    assert query_spans(200, sr, s, min_segments=5) == [(a, a + 100) for a in (0, 25, 50, 75, 100)]  # half the hop: 5
    assert query_spans(150, sr, s, min_segments=5) == [(a, a + 100) for a in (0, 12, 24, 36, 48)] + [(50, 150)]  # a quarter, at most
    assert query_spans(500, sr, s, min_segments=5) == query_spans(500, sr, s)  # 5 s has 9 already: the catalog's grid
    assert query_spans(100, sr, s, min_segments=5) == [(0, 100)] and query_spans(30, sr, s, min_segments=5) == [(0, 30)]  # one window
    emb = _Lengths()
    emb.sample_rate = 100
    got = embed_queries(emb, [np.zeros(200, np.float32)], s, min_segments=5)
    assert emb.calls == [5] and got[0].starts_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_query_played_at_several_rates_keeps_each_tracks_best():
    vectors, track, start = _catalog()
    idx = _index(vectors, track, start)
    rng = np.random.default_rng(6)
    right = _query(vectors[_rows(track, start, 2, range(6, 12))] + 0.1 * rng.normal(size=(6, DIM)))  # as the catalog has it: at 3.0 s
    wrong = _query(rng.normal(size=(6, DIM)))  # the same clip at a rate that garbles it
    alone, garbled = idx.match([right, wrong], top_k=5)
    merged = idx.match([(wrong, right)], top_k=5)[0]
    assert alone[0][0] == 2 and alone[0][2] == 3.0 and merged[0] == alone[0]
    best: dict[int, float] = {}
    for t, s, _ in alone + garbled:
        best[t] = max(best.get(t, -1.0), s)
    assert [(t, s) for t, s, _ in merged] == sorted(best.items(), key=lambda item: -item[1])[:5]  # every track at its best rate
    assert idx.match([(right, wrong)], top_k=5)[0] == merged
    assert idx.match([wrong, (wrong, right)], top_k=5) == [garbled, merged]  # queries with and without variants in one call


def test_each_rate_plays_the_query_faster_or_slower_before_it_is_cut():
    emb = _Lengths()
    catalog = Segmentation(window_s=5.0, hop_s=1.0, min_s=1.0)
    got = embed_queries(emb, [np.zeros(100, np.float32)], catalog)
    (as_played, faster, slower), = embed_query_rates(emb, [np.zeros(100, np.float32)], catalog, _search(rates=(1.0, 1.25, 0.8)))
    assert emb.calls == [6, 19] and as_played.starts_s.tolist() == got[0].starts_s.tolist()  # 10 s: 6 segments; 8 s: 4; 12.5 s: 9, one call
    assert (len(faster), len(slower)) == (4, 9) and faster.vectors[:, 0].tolist() == [50] * 4


def test_only_a_short_query_is_played_at_the_other_rates_and_each_variant_knows_its_rate():
    emb = _Lengths()
    catalog = Segmentation(window_s=5.0, hop_s=1.0, min_s=1.0)
    short, long = np.zeros(20, np.float32), np.zeros(100, np.float32)  # 2 s and 10 s at the stand-in's 10 Hz
    got = embed_query_rates(emb, [short, long], catalog, _search(rates=(1.0, 1.25, 0.8), rates_max_s=2.0))
    assert [[v.rate for v in q] for q in got] == [[1.0, 1.25, 0.8], [1.0]]
    assert [len(v) for v in got[1]] == [6] and emb.calls == [9]  # one call: the short query thrice (1 segment each), the long one once


def test_a_score_at_another_rate_counts_the_rate_penalty_less():
    from pipeline.index.match import best_of

    as_played, faster = [(0, 0.80, 1.0), (1, 0.50, 2.0)], [(1, 0.83, 2.5), (0, 0.70, 1.0)]
    assert best_of([as_played, faster], 5) == [(1, 0.83, 2.5), (0, 0.80, 1.0)]  # the best of either, as before
    got = best_of([as_played, faster], 5, [0.0, 0.05])
    assert [t for t, _, _ in got] == [0, 1] and got[1] == pytest.approx((1, 0.78, 2.5))  # 0.83 - 0.05 still beats 0.50 as played


def test_the_neighbours_matching_read_are_the_exact_search_and_each_querys_first_rate_rows_pick_them():
    from pipeline.evaluate.retrieval import first_rate_rows

    vectors, track, start = _catalog()
    idx = _index(vectors, track, start)
    rng = np.random.default_rng(8)
    one, other = _query(rng.normal(size=(3, DIM))), _query(rng.normal(size=(5, DIM)))
    fast = _query(rng.normal(size=(2, DIM)))
    hits, neighbours = idx.match_with_neighbours([(one, fast), (other,)], top_k=5)
    assert hits == idx.match([(one, fast), (other,)], top_k=5)
    rows = first_rate_rows([(one, fast), (other,)])
    assert rows.tolist() == [0, 1, 2, 5, 6, 7, 8, 9]  # one's 3 segments, then (past fast's 2) other's 5
    exact = idx.index.search(np.concatenate([one.vectors, other.vectors]), 10)[1]
    assert np.array_equal(neighbours[rows, :10], exact)

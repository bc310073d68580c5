"""Publishing by merit (pipeline/evaluate/merit.py) on hand-made metric rows: the winner, the tie-break, the fallbacks, the reason."""

from dataclasses import replace

import pytest

from pipeline import config
from pipeline.config import ConfigError, PublishSettings
from pipeline.evaluate.merit import choose, length_of

DEFAULT = config.defaults(PublishSettings)


def rows(table: dict, p95: dict | None = None, ks=(1, 10)) -> list[dict]:
    """{(embedder, kind): {query_set: recall@1}} -> retrieval_metrics rows (Recall@10 = Recall@1 + 0.05, MRR = Recall@1 + 0.01)."""
    out = []
    for (emb, kind), sets in table.items():
        for qset, r1 in sets.items():
            for metric, k, value in [*(("recall", k, r1 + 0.05 * (k > 1)) for k in ks), ("mrr", 0, r1 + 0.01), ("queries", 0, 20)]:
                out.append({"embedder": emb, "index_kind": kind, "query_set": qset, "metric": metric, "k": k, "value": value})
        out.append({"embedder": emb, "index_kind": kind, "query_set": "latency/5s", "metric": "latency_e2e_p95_ms", "k": 0,
                    "value": (p95 or {}).get((emb, kind), 5.0)})
        out.append({"embedder": emb, "index_kind": kind, "query_set": "all", "metric": "recall_vs_exact", "k": 10, "value": 0.99})
    return out


def test_the_default_criterion_is_the_worst_degraded_5s_recall_at_1():
    assert DEFAULT == PublishSettings(metric="recall", k=1, length_s=5.0, aggregate="min", include_clean=False, index_kinds=("hnsw", "ivfpq"))
    table = {("contrastive", "hnsw"): {"5s/clean": 1.0, "5s/pink0db": 0.70, "5s/telephone": 0.90, "2s/pink0db": 0.10},
             ("mel-stats", "hnsw"): {"5s/clean": 0.5, "5s/pink0db": 0.80, "5s/telephone": 0.75, "2s/pink0db": 0.90},
             ("mel-stats", "flat"): {"5s/clean": 1.0, "5s/pink0db": 0.95, "5s/telephone": 0.95, "2s/pink0db": 0.95}}
    choice = choose(rows(table), DEFAULT)
    assert (choice["embedder"], choice["index_kind"]) == ("mel-stats", "hnsw")  # 0.75 beats 0.70; clean and 2 s do not count
    assert choice["score"] == pytest.approx(0.75) and choice["worst_set"] == "5s/telephone"
    assert choice["criterion"] == "worst degraded Recall@1 at 5 s queries" and choice["sets"] == ["5s/pink0db", "5s/telephone"]
    assert choice["reason"].startswith("mel-stats/hnsw has the best worst degraded Recall@1 at 5 s queries: 0.7500 (worst on 5s/telephone); "
                                       "runner-up contrastive/hnsw: 0.7000 (worst on 5s/pink0db)")
    assert "not candidates though higher: mel-stats/flat 0.9500 (flat is not in publish.index_kinds). Scored on 20 queries per set." in choice["reason"]
    assert [(c["embedder"], c["index_kind"], c["rank"], c["eligible"]) for c in choice["candidates"]] == [
        ("mel-stats", "hnsw", 1, True), ("contrastive", "hnsw", 2, True), ("mel-stats", "flat", 3, False)]

    mean = choose(rows(table), replace(DEFAULT, aggregate="mean", include_clean=True, index_kinds=("flat", "hnsw")))
    assert (mean["embedder"], mean["index_kind"], mean["score"]) == ("mel-stats", "flat", pytest.approx((1.0 + 0.95 + 0.95) / 3))
    assert mean["criterion"] == "mean Recall@1 at 5 s queries" and "worst set 5s/pink0db: 0.9500" in mean["reason"]
    mrr = choose(rows(table), replace(DEFAULT, metric="mrr", length_s=2.0))
    assert (mrr["embedder"], mrr["criterion"], mrr["score"]) == ("mel-stats", "worst degraded MRR at 2 s queries", pytest.approx(0.91))
    r10 = choose(rows(table), replace(DEFAULT, k=10))
    assert r10["criterion"] == "worst degraded Recall@10 at 5 s queries" and r10["score"] == pytest.approx(0.80)


def test_ties_go_to_the_higher_mean_then_the_lower_latency_then_the_name():
    same = {"5s/clean": 1.0, "5s/pink0db": 0.8, "5s/telephone": 0.9}
    table = {("contrastive", "hnsw"): {**same, "5s/clean": 0.9}, ("mel-stats", "hnsw"): same}
    by_mean = choose(rows(table), DEFAULT)
    assert by_mean["embedder"] == "mel-stats"
    assert "tied at 0.8000, decided by the higher mean Recall@1 over every 5 s set (0.9000 vs 0.8667)" in by_mean["reason"]
    table = {("contrastive", "hnsw"): same, ("mel-stats", "hnsw"): same, ("mel-stats", "ivfpq"): same}
    by_latency = choose(rows(table, {("mel-stats", "ivfpq"): 1.5, ("contrastive", "hnsw"): 2.0}), DEFAULT)
    assert (by_latency["embedder"], by_latency["index_kind"]) == ("mel-stats", "ivfpq")
    assert "runner-up contrastive/hnsw" in by_latency["reason"]
    assert "decided by the lower single-query p95 latency end to end (1.50 ms vs 2.00 ms)" in by_latency["reason"]
    by_name = choose(rows(table), DEFAULT)
    assert (by_name["embedder"], by_name["index_kind"]) == ("contrastive", "hnsw") and "decided by name order" in by_name["reason"]


def test_fallbacks_are_stated_in_the_reason():
    table = {("contrastive", "flat"): {"2s/clean": 1.0, "10s/clean": 1.0, "10s/reverb": 0.6},
             ("mel-stats", "flat"): {"2s/clean": 1.0, "10s/clean": 1.0, "10s/reverb": 0.7}}
    choice = choose(rows(table, ks=(10,)), DEFAULT)
    assert (choice["embedder"], choice["index_kind"], choice["worst_set"]) == ("mel-stats", "flat", "10s/reverb")
    assert choice["criterion"] == "worst degraded Recall@10 at 10 s queries"
    assert choice["notes"] == ["publish.length_s 5 s was not evaluated (evaluated: 2 s, 10 s): scored the longest, 10 s",
                               "Recall@1 was not evaluated (evaluated: 10): scored Recall@10",
                               "the run has none of publish.index_kinds (hnsw, ivfpq): every kind it has was a candidate"]
    assert all(f"Note: {n}." in choice["reason"] for n in choice["notes"])
    only_clean = choose(rows({("mel-stats", "hnsw"): {"5s/clean": 0.9}}), DEFAULT)
    assert only_clean["criterion"] == "worst Recall@1 at 5 s queries" and "the only candidate" in only_clean["reason"]
    assert "5 s has no degraded query set: scored clean" in only_clean["reason"]
    partial = {("contrastive", "hnsw"): {"5s/pink0db": 0.9}, ("mel-stats", "hnsw"): {"5s/pink0db": 0.5, "5s/reverb": 0.5}}
    choice = choose(rows(partial), DEFAULT)  # a candidate without a row for every set is not eligible
    assert choice["embedder"] == "mel-stats" and choice["candidates"][1]["why_not"] == "no rows for 5s/reverb"
    with pytest.raises(ValueError, match="no query-set rows"):
        choose(rows({("mel-stats", "hnsw"): {}}), DEFAULT)


def test_query_set_lengths_and_settings_are_checked(monkeypatch):
    assert [length_of(q) for q in ("5s/pink0db", "2.5s/clean", "all", "latency/5s", "speed/x")] == [5.0, 2.5, None, None, None]
    monkeypatch.setenv("CLOUDTUNE__PUBLISH__AGGREGATE", "max")
    with pytest.raises(ConfigError, match="config publish.aggregate: 'max' is not one of min, mean"):
        config.defaults(PublishSettings)


def test_the_metric_table_shows_recall_at_1_not_a_mean_over_every_k():
    """The table of the report and the bench: its R@1 row is the k=1 recall, beside MRR and offset hits (not averaged with R@5, R@10)."""
    from pipeline.evaluate.report import metric_table

    rows = [{"embedder": "fingerprint", "index_kind": "flat", "query_set": "5s/pink0db", "metric": metric, "k": k, "value": value}
            for metric, k, value in (("recall", 1, 0.8), ("recall", 5, 0.9), ("recall", 10, 1.0), ("mrr", 0, 0.85), ("offset_hit", 0, 0.6))]
    rows.append({"embedder": "fingerprint", "index_kind": "flat", "query_set": "1s/pink0db", "metric": "recall", "k": 1, "value": 0.1})
    table = metric_table(rows, "5s")
    assert table.loc[("fingerprint", "flat", "R@1"), "pink0db"] == 0.8
    assert table.loc[("fingerprint", "flat", "MRR"), "pink0db"] == 0.85 and table.loc[("fingerprint", "flat", "offset hit"), "pink0db"] == 0.6

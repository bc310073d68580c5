"""Publishing by merit: which (embedder, index kind) of an evaluated run to publish, by a configured criterion.

Pure: a run's ``retrieval_metrics`` rows and :class:`~pipeline.config.PublishSettings` (configs/index.yaml ``publish``) in,
a JSON-able choice out; nothing here reads config, files or the database. The rule:

1. **Sets.** The query sets of length ``length_s`` (``5s/pink0db``: ``<length>s/<degradation>``), ``clean`` left out unless
   ``include_clean``. A length the run did not evaluate falls back to the longest it did; a length with nothing but
   clean scores clean; a Recall@k the run did not evaluate falls back to its smallest k. Each fallback is a note in the reason.
2. **Score.** Every (embedder, index kind) with rows: ``aggregate`` (min | mean) of ``metric`` (Recall@k | MRR) over
   those sets. A candidate without a row for one of them is not eligible.
3. **Candidates.** Those of ``index_kinds``; every kind the run has when it has none of those.
4. **Ties** (equal scores, to 1e-9), in order: the higher mean of the metric over every set of that length (clean
   included), then the lower single-query p95 latency end to end (``latency_e2e_p95_ms``), then name order.

The reason names the winner, its score and the set where it is worst, the runner-up with its score, what broke a
tie, and any candidate left out by ``index_kinds`` that scored higher.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from pipeline.config import PublishSettings
from pipeline.evaluate.sets import degradation_of, length_of

TIE_BREAK = ("the higher mean of the metric over every set of that length (clean included), then the lower single-query p95 latency "
             "end to end, then name order (embedder, then index kind)")  # what decides between equal scores, in order
EPS = 1e-9


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=EPS)


def criterion_label(settings: PublishSettings, length_s: float | None = None, k: int | None = None, clean: bool | None = None) -> str:
    """E.g. ``worst degraded Recall@1 at 5 s queries`` (what the score means; the fallbacks' values when given)."""
    clean = settings.include_clean if clean is None else clean
    metric = f"Recall@{settings.k if k is None else k}" if settings.metric == "recall" else "MRR"
    length = settings.length_s if length_s is None else length_s
    return f"{'worst' if settings.aggregate == 'min' else 'mean'} {'' if clean else 'degraded '}{metric} at {length:g} s queries"


def choose(rows: Iterable[Mapping[str, Any]], settings: PublishSettings) -> dict:
    """The (embedder, index kind) to publish from a run's metric rows (each with embedder, index_kind, query_set, metric,
    k, value): ``{"embedder", "index_kind", "criterion", "score", "worst_set", "sets", "reason", "notes", "tie_break",
    "settings", "candidates": [...]}``, candidates in rank order (eligible ones first). Raises ValueError without query-set rows."""
    values: dict[tuple[str, str], dict[tuple[str, str, int], float]] = {}
    p95: dict[tuple[str, str], dict[float, float]] = {}
    for r in rows:
        key, qset = (str(r["embedder"]), str(r["index_kind"])), str(r["query_set"])
        timed = length_of(qset.removeprefix("latency/") + "/") if qset.startswith("latency/") else None  # latency/5s -> 5.0
        if timed is not None and r["metric"] == "latency_e2e_p95_ms":
            p95.setdefault(key, {})[timed] = float(r["value"])
        elif length_of(qset) is not None:
            values.setdefault(key, {})[(qset, str(r["metric"]), int(r["k"] or 0))] = float(r["value"])
    if not values:
        raise ValueError("merit: no query-set rows to score (sets are named <length>s/<degradation>, e.g. 5s/pink0db)")
    notes: list[str] = []

    lengths = sorted({length_of(q) for v in values.values() for q, _, _ in v})
    length = next((x for x in lengths if _same(x, settings.length_s)), None)
    if length is None:
        length = lengths[-1]
        notes.append(f"publish.length_s {settings.length_s:g} s was not evaluated (evaluated: {', '.join(f'{x:g} s' for x in lengths)}): "
                     f"scored the longest, {length:g} s")
    at_length = sorted({q for v in values.values() for q, _, _ in v if _same(length_of(q), length)})
    clean = settings.include_clean
    sets = [q for q in at_length if clean or degradation_of(q) != "clean"]
    if not sets:
        sets, clean = at_length, True
        notes.append(f"{length:g} s has no degraded query set: scored clean")
    k = 0
    if settings.metric == "recall":
        ks = sorted({kk for v in values.values() for q, m, kk in v if m == "recall" and q in sets})
        if not ks:
            raise ValueError(f"merit: no recall rows for the {length:g} s query sets")
        k = settings.k if settings.k in ks else ks[0]
        if k != settings.k:
            notes.append(f"Recall@{settings.k} was not evaluated (evaluated: {', '.join(map(str, ks))}): scored Recall@{k}")
    criterion = criterion_label(settings, length, k, clean)

    candidates = []
    for (emb, kind), v in sorted(values.items()):
        got = {q: v[(q, settings.metric, k)] for q in at_length if (q, settings.metric, k) in v}
        missing = [q for q in sets if q not in got]
        scored = [got[q] for q in sets if q in got]
        worst = min((q for q in sets if q in got), key=lambda q: (got[q], q), default=None)
        latency = p95.get((emb, kind), {})
        e2e = latency.get(length, latency[max(latency)] if latency else None)
        candidates.append({"embedder": emb, "index_kind": kind,
                           "score": (min(scored) if settings.aggregate == "min" else sum(scored) / len(scored)) if scored else None,
                           "worst_set": worst, "worst_value": got.get(worst), "mean_all": sum(got.values()) / len(got) if got else None,
                           "e2e_p95_ms": e2e, "missing": missing})
    kinds_here = {c["index_kind"] for c in candidates}
    allowed = set(settings.index_kinds) & kinds_here
    if not allowed:
        allowed = kinds_here
        notes.append(f"the run has none of publish.index_kinds ({', '.join(settings.index_kinds)}): every kind it has was a candidate")
    for c in candidates:
        c["eligible"] = c["index_kind"] in allowed and not c["missing"] and c["score"] is not None
        c["why_not"] = (None if c["eligible"] else f"no rows for {', '.join(c['missing'])}" if c["missing"] or c["score"] is None
                        else f"{c['index_kind']} is not in publish.index_kinds")

    def order(c: dict) -> tuple:
        return (not c["eligible"], -round(c["score"] if c["score"] is not None else -1.0, 9), -round(c["mean_all"] or 0.0, 9),
                c["e2e_p95_ms"] if c["e2e_p95_ms"] is not None else math.inf, c["embedder"], c["index_kind"])

    candidates.sort(key=order)
    for rank, c in enumerate(candidates, 1):
        c["rank"] = rank
    best = candidates[0]
    if not best["eligible"]:
        raise ValueError(f"merit: no candidate has a row for every {length:g} s query set ({best['why_not']})")
    metric = f"Recall@{k}" if settings.metric == "recall" else "MRR"
    counts = [v[(q, "queries", 0)] for c in candidates if c["eligible"] for v in [values[c["embedder"], c["index_kind"]]] for q in sets
              if (q, "queries", 0) in v]
    reason = _reason(best, [c for c in candidates if c["eligible"]][1:2], candidates, criterion, metric, settings.aggregate, notes, length, counts)
    plain = {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(settings).items()}  # as it reads back from JSON
    return {"embedder": best["embedder"], "index_kind": best["index_kind"], "criterion": criterion, "score": best["score"],
            "worst_set": best["worst_set"], "sets": sets, "reason": reason, "notes": notes, "tie_break": TIE_BREAK, "settings": plain,
            "candidates": candidates}


def _name(c: dict) -> str:
    return f"{c['embedder']}/{c['index_kind']}"


def _scored(c: dict, aggregate: str) -> str:
    if aggregate == "min":
        return f"{c['score']:.4f} (worst on {c['worst_set']})"
    return f"{c['score']:.4f} (worst set {c['worst_set']}: {c['worst_value']:.4f})"


def _reason(best: dict, runner_up: list[dict], candidates: list[dict], criterion: str, metric: str, aggregate: str, notes: list[str],
            length: float, counts: list[float]) -> str:
    parts = [f"{_name(best)} has the best {criterion}: {_scored(best, aggregate)}"]
    if not runner_up:
        parts.append("the only candidate")
    else:
        other = runner_up[0]
        parts.append(f"runner-up {_name(other)}: {_scored(other, aggregate)}")
        if _same(best["score"], other["score"]):
            if not _same(best["mean_all"], other["mean_all"]):
                why = f"the higher mean {metric} over every {length:g} s set ({best['mean_all']:.4f} vs {other['mean_all']:.4f})"
            elif best["e2e_p95_ms"] != other["e2e_p95_ms"] and best["e2e_p95_ms"] is not None:
                why = f"the lower single-query p95 latency end to end ({best['e2e_p95_ms']:.2f} ms vs {other['e2e_p95_ms'] or math.inf:.2f} ms)"
            else:
                why = "name order"
            parts.append(f"tied at {best['score']:.4f}, decided by {why}")
    better = [c for c in candidates if not c["eligible"] and c["score"] is not None and c["score"] > best["score"] + EPS]
    if better:
        parts.append("not candidates though higher: " + ", ".join(f"{_name(c)} {c['score']:.4f} ({c['why_not']})" for c in better))
    scored = ""
    if counts:  # how far a score can be trusted: Recall@1 moves in steps of 1/queries
        scored = f" Scored on {min(counts):g}{'' if min(counts) == max(counts) else f' to {max(counts):g}'} queries per set."
    return "; ".join(parts) + "." + scored + "".join(f" Note: {n}." for n in notes)

"""`cloudtune` commands of retrieval: embed-catalog, index, evaluate, search, publish, export."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline import config, paths
from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CommandError
from pipeline.names import EMBEDDERS, INDEX_KINDS


def _published_or(run_id: str | None) -> str:
    from pipeline.publish import published

    if run_id:
        return run_id
    pub = published()
    if pub is None:
        raise CommandError("no --run-id and no published run (cloudtune evaluate publishes one)", EXIT_USAGE)
    return pub["run_id"]


def cmd_embed_catalog(args: argparse.Namespace) -> int:
    from pipeline.devices import resolve_device
    from pipeline.embed import EmbedderUnavailable
    from pipeline.embed.catalog import embed_catalog
    from pipeline.embed.registry import get_embedder
    from pipeline.steps.retrieval import embedder_settings

    run_id = _published_or(args.run_id)
    try:
        embedder = get_embedder(args.embedder, run_id, resolve_device(args.device), **embedder_settings())
    except EmbedderUnavailable as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    index_s = config.load_index()
    m = embed_catalog(run_id, embedder, args.catalog, settings=index_s["segments"], hubs=index_s["hubs"])
    print(f"embed-catalog: {m['count']} segments of {m['tracks']} tracks ({', '.join(m['catalogs'])}) with {args.embedder}, dim {m['dim']}, "
          f"{len(m['failed_tracks'])} failed, {m['reused_tracks']} reused -> {paths.embeddings(run_id, args.embedder).folder}")
    return EXIT_FAILED if m["failed_tracks"] and args.strict else 0


def cmd_index(args: argparse.Namespace) -> int:
    from pipeline.index.faiss_index import build_index

    run_id = _published_or(args.run_id)
    for kind in args.kind:
        m = build_index(run_id, args.embedder, kind, config.load_index())
        print(f"index: {kind} over {m['count']} x {m['dim']} {args.embedder} vectors in {m['build_seconds']:.2f} s, "
              f"{m['bytes_per_vector']:.0f} bytes/vector, params {json.dumps(m['params'])} -> {paths.index(run_id, args.embedder, kind).folder}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.report import metric_table
    from pipeline.steps.evaluation import evaluate
    from pipeline.steps.retrieval import publish

    run_id = _published_or(args.run_id)
    result = evaluate(run_id, embedders=args.embedder, index_kinds=args.kind, catalogs=args.catalog, distractors=args.distractors,
                      device=resolve_device(args.device), plan=args.plan)
    result["published"] = not args.no_publish and bool(publish(run_id))
    for length in ("5s", "2s"):
        table = metric_table(result["rows"], length)
        if len(table):
            flat = table[table.index.get_level_values("index_kind") == "flat"].droplevel("index_kind")
            print(f"\n{length} queries, exact index (Recall@1, MRR and offset hits per degradation):")
            print(flat.round(3).to_string())
    choice = result["choice"]
    print(f"\nchoice by merit ({choice['criterion']}): {choice['embedder']}/{choice['index_kind']}, {choice['score']:.4f}")
    print(f"reason: {choice['reason']}")
    print(f"\nevaluate: {len(result['rows'])} metric rows for run {run_id}" + (" (published)" if result["published"] else ""))
    print(f"report: {result['report']}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from pipeline.devices import resolve_device
    from pipeline.search import Searcher, search_clips
    from pipeline.steps.retrieval import embedder_settings

    settings = config.load_index()
    searcher = Searcher(settings, args.run_id, args.embedder, args.kind, resolve_device(args.device), embedder_settings=embedder_settings(),
                        audio=config.load_pipeline().audio)
    failed = 0
    for result in search_clips(args.clips, searcher, args.top_k or settings["search"].top_k):
        if "error" in result:
            failed += 1
            print(f"search: error: {result['error']}", file=sys.stderr)
        if args.json:
            print(json.dumps(result), flush=True)
        elif "results" in result:
            print(f"{result['query']}:")
            for hit in result["results"]:
                print(f"  {hit['rank']:3d}. {hit['score']:.4f}  {hit['track_id']}  at {hit['offset_s']:.2f} s  {hit['source_uri']}")
    return EXIT_FAILED if failed == len(args.clips) else 0


def cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.publish import published
    from pipeline.steps.retrieval import publish

    if args.show:
        print(json.dumps(published(), indent=2))
        return 0
    if not args.run_id:
        raise CommandError("--run-id is required (or --show)", EXIT_USAGE)
    record = publish(args.run_id, args.embedder, args.kind)
    print(f"publish: run {record['run_id']} ({record['embedder']}, {record['index_kind']}) is now published")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.steps.training import export_fingerprint_onnx

    run_id = _published_or(args.run_id)
    r = export_fingerprint_onnx(run_id)
    if r["reused"]:
        print(f"export: {r['path']} is already the export of run {run_id}'s fingerprint checkpoint (opset {r['opset']})")
    else:
        print(f"export: fingerprint of run {run_id} -> {r['path']} (opset {r['opset']}, dynamic batch; ONNX Runtime vs PyTorch: max |diff| "
              f"{r['max_abs_diff']:.2g} on random inputs at batch {' and '.join(map(str, r['check_batches']))}; {r['seconds']:.1f} s)")
    q = r.get("int8")
    if q and "error" in q:
        return 2  # asked for (fingerprint_inference.precision int8) and refused: the reason is on stderr
    if q and q["reused"]:
        print(f"export: {q['path']} is already the int8 export of that checkpoint (mean cosine to float32 {q['mean_cosine']:.4f})")
    elif q:
        print(f"export: int8 -> {q['path']} (calibrated on {q['calibration']} train-track segments; vectors' cosine to float32 on as many "
              f"val-track segments: mean {q['mean_cosine']:.4f}, min {q['min_cosine']:.4f}; {q['seconds']:.1f} s)")
    return 0


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``cloudtune`` parser's subparsers ``sub``."""
    s = sub.add_parser("embed-catalog", help="embed every catalog segment (window/hop in configs/index.yaml) into runs/<run_id>/embeddings/")
    s.add_argument("--embedder", required=True, choices=EMBEDDERS)
    s.add_argument("--run-id", help="the run (default: the published one); contrastive uses its trained embedder")
    s.add_argument("--catalog", action="append", help="catalog(s) to embed (default: those of the run's split tracks)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--strict", action="store_true", help="exit 1 when any track failed")
    s.set_defaults(func=cmd_embed_catalog)

    s = sub.add_parser("index", help="index build: FAISS flat | hnsw | ivfpq over a run's catalog embeddings")
    s.add_argument("action", choices=("build",))
    s.add_argument("--kind", required=True, action="append", choices=INDEX_KINDS, help="repeat for several kinds")
    s.add_argument("--embedder", required=True, choices=EMBEDDERS)
    s.add_argument("--run-id", help="the run (default: the published one)")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("evaluate", help="Recall@K, MRR, latency of a run's embedders and indexes; HTML report; publishes the run")
    s.add_argument("--run-id", help="the run (default: the published one)")
    s.add_argument("--embedder", action="append", choices=EMBEDDERS, help="default: configs/eval.yaml evaluation.embedders")
    s.add_argument("--kind", action="append", choices=INDEX_KINDS, help="default: configs/eval.yaml evaluation.index_kinds")
    s.add_argument("--catalog", action="append", help="gallery catalog(s) (default: those of the run's split tracks)")
    s.add_argument("--distractors", action="append", metavar="CATALOG",
                   help="a catalog indexed beside the run's but never queried (repeat for more; default configs/eval.yaml evaluation.distractors)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--plan", help="query plan, a name of configs/eval.yaml queries.plans (default: queries.plan)")
    s.add_argument("--no-publish", action="store_true", help="do not publish the run after the evaluation")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("search", help="find the catalog tracks of audio clips (default: the published run)")
    s.add_argument("clips", nargs="+", metavar="CLIP")
    s.add_argument("--top-k", type=int, help="tracks per clip (default configs/index.yaml search.top_k)")
    s.add_argument("--run-id", help="search this run instead of the published one")
    s.add_argument("--embedder", choices=EMBEDDERS, help="default: the published one")
    s.add_argument("--kind", choices=INDEX_KINDS, help="index kind (default: the published one)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--json", action="store_true", help="one JSON line per clip")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("publish", help="make an evaluated run the one search and the nightly DAG use (--show: the current one)")
    s.add_argument("--run-id")
    s.add_argument("--embedder", choices=EMBEDDERS, help="default: the evaluation's choice by merit (configs/index.yaml publish)")
    s.add_argument("--kind", choices=INDEX_KINDS, help="default: the evaluation's choice by merit (for a named --embedder, its best kind)")
    s.add_argument("--show", action="store_true")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("export", help="export onnx: a run's fingerprint network for ONNX Runtime (models/fingerprint.onnx), checked against PyTorch")
    s.add_argument("format", choices=("onnx",))
    s.add_argument("--run-id", help="the run (default: the published one)")
    s.set_defaults(func=cmd_export)

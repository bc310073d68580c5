"""FAISS indexes over catalog segment vectors: build, save with a manifest, load (checked), search by track."""

from pipeline.index.faiss_index import INDEX_KINDS, TrackIndex, build_index, collapse_to_tracks, load_index

__all__ = ["INDEX_KINDS", "TrackIndex", "build_index", "collapse_to_tracks", "load_index"]

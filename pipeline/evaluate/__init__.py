"""Retrieval evaluation: degraded query clips from held-out tracks against the whole indexed catalog."""

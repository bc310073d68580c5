"""Query set names: ``<length>s/<degradation>`` (``5s/pink0db``, ``2.5s/clean``), made and read in one place.

The other rows of a run use names that are not sets: ``all`` (whole-run figures) and ``latency/<length>s``.
"""

from __future__ import annotations


def set_name(length_s: float, name: str) -> str:
    return f"{length_s:g}s/{name}"


def length_of(query_set: str) -> float | None:
    """The query length of a set in seconds (5.0 for ``5s/pink0db``); None for the others (``all``, ``latency/5s``)."""
    head, sep, _ = query_set.partition("/")
    if not sep or not head.endswith("s"):
        return None
    try:
        return float(head[:-1])
    except ValueError:
        return None


def degradation_of(query_set: str) -> str:
    return query_set.partition("/")[2]

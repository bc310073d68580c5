"""The ingest step (``cloudtune ingest``, ``cloudtune demo``, the audio_retrieval DAG's ``ingest`` task): reads the
``audio:`` and ``ingest:`` sections of configs/pipeline.yaml and hands them to :func:`pipeline.ingest.ingest`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipeline import config

if TYPE_CHECKING:
    from pipeline.ingest import IngestSummary


def ingest(sources: Iterable[str | os.PathLike], catalog: str = "default", workers: int | None = None, *, url: str | None = None,
           run_id: str | None = None, progress: bool = True) -> IngestSummary:
    """Ingest files and folders into ``catalog`` (``workers``: decode processes; None: config ``ingest.workers``; 0: one per
    core). Returns the run's summary; bad files never raise."""
    from pipeline.ingest import ingest as ingest_files

    data = config.load()
    audio, settings = config.section(config.AudioSettings, data, "audio"), config.section(config.IngestSettings, data, "ingest")
    return ingest_files(sources, catalog, workers, audio=audio, settings=settings, url=url, run_id=run_id, progress=progress)

"""The tokenizer steps (``cloudtune tokenizer train``, ``cloudtune tokenize``, the audio_retrieval DAG's ``train_tokenizer``
and ``tokenize`` tasks): read configs/pipeline.yaml, apply the caller's overrides and hand the settings to
:mod:`pipeline.tokenize.catalog`. (Named ``tokens``, not ``tokenize``, to stay clear of the standard library's module.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import config

if TYPE_CHECKING:
    from pipeline.tokenize.catalog import TokenizeSummary


def _with(cfg: config.PipelineConfig, **sections: Any) -> config.PipelineConfig:
    """``cfg`` with the given sections (settings objects) in place of the configured ones; ``None`` keeps a section."""
    return config.PipelineConfig({**cfg, **{name: value for name, value in sections.items() if value is not None}}, cfg.raw)


def train_tokenizer(catalog: str | None = None, input_root: str | Path | None = None, *, settings: config.RVQSettings | None = None,
                    url: str | None = None, run_id: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Train the rvq codec (``settings``, default config ``rvq``) on a catalog's tracks, or on the audio files under
    ``input_root``; a no-op when the same settings and tracks made one already. Returns (codec folder, report)."""
    from pipeline.tokenize.catalog import train_tokenizer as train

    return train(_with(config.load_pipeline(), rvq=settings), catalog, input_root, url=url, run_id=run_id, progress=progress)


def tokenize(backend: str | None = None, catalog: str | None = None, input_root: str | Path | None = None, output_root: str | Path | None = None,
             *, device: str = "auto", max_files: int | None = None, chunk_seconds: float | None = None, save_format: str | None = None,
             overwrite: bool = False, fail_fast: bool = False, model_dir: str | None = None, num_quantizers: int | None = None,
             url: str | None = None, run_id: str | None = None, progress: bool = True, shard: tuple[int, int] | None = None) -> TokenizeSummary:
    """Tokenize a catalog (or the audio files under ``input_root``) into token files: config ``tokenize`` with ``backend``,
    ``chunk_seconds`` and ``save_format`` over it, ``moss`` with ``model_dir`` and ``num_quantizers`` (None: the configured
    value). See :func:`pipeline.tokenize.catalog.tokenize` for re-runs, failures and ``shard``."""
    from pipeline.tokenize.catalog import tokenize as tokenize_items

    cfg = config.load_pipeline()
    settings = _with(cfg, tokenize=config.section(config.TokenizeSettings, cfg.raw, "tokenize", backend=backend, chunk_seconds=chunk_seconds,
                                                  save_format=save_format),
                     moss=config.section(config.MossSettings, cfg.raw, "moss", model_dir=model_dir, num_quantizers=num_quantizers))
    return tokenize_items(settings, catalog, input_root, output_root, device=device, max_files=max_files, num_quantizers=num_quantizers,
                          overwrite=overwrite, fail_fast=fail_fast, url=url, run_id=run_id, progress=progress, shard=shard)

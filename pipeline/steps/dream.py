"""The ``dream_generator`` DAG's step: the dream VAE (:mod:`pipeline.train.vae`) from the DAG's params."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import config, paths
from pipeline.config import DreamSettings


def dream_from_params(params: dict) -> dict:
    """The Airflow task of dags/dream_generator.py: the DAG params (the CLI's flags) -> the JSON result (its XCom).

    Relative paths are taken under CLOUDTUNE_HOME (a worker's working folder is arbitrary). The result is
    printed to the task log; bad input fails the task without retries, other failures are retried."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.train.vae import EXIT_USAGE, DreamError, train_dream

    home = paths.home()
    under_home = {k: str(home / params[k]) if not Path(params[k]).is_absolute() else params[k] for k in ("data", "out")}
    s = config.section(DreamSettings, config.load(), "dream", data_dir=under_home["data"], dataset=params["dataset"], epochs=params["epochs"],
                       batch_size=params["batch_size"], latent_dim=params["latent_dim"], lr=params["lr"], out=under_home["out"],
                       device=params["device"], seed=params["seed"])
    try:
        result = train_dream(s, progress=True)
    except DreamError as exc:
        print(json.dumps({"success": False, "files": [], "message": str(exc)}))
        if exc.code == EXIT_USAGE:
            raise AirflowFailException(str(exc)) from None
        raise
    print(json.dumps(result))
    return result

"""
### dream_generator: the MNIST "dream generator" VAE, triggered from the UI

One task, `train` (pool and Celery queue `gpu`): trains the spec's VAE (784 -> 400 -> 2 -> 400 -> 784,
BCE + KLD, Adam) and decodes 64 points drawn from N(0, I) into one 8x8 grid, plus the latent manifold,
the loss curve and the checkpoint. The params are `cloudtune dream`'s flags (defaults: `configs/pipeline.yaml`
section `dream`); relative paths are taken under `$CLOUDTUNE_HOME`. The JSON result
`{"success", "files", "message"}` is printed in the task log and is the task's XCom. Bad input (no MNIST
files, `device=cuda` without a GPU) fails at once without retries; use `dataset=digits` offline.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from pipeline.names import DEVICES  # light: no imports of its own


def _settings():
    from pipeline import config  # light (PyYAML); torch and the model load inside the task

    return config.section(config.DreamSettings, config.load(), "dream"), config.load_airflow()


D, AIRFLOW = _settings()
GPU = AIRFLOW["pools"].gpu


@dag(
    dag_id="dream_generator",
    schedule=None,
    catchup=False,
    tags=["cloudtune", "vae", "dream"],
    doc_md=__doc__,
    default_args={"retries": AIRFLOW["dag"].retries, "retry_delay": timedelta(seconds=AIRFLOW["dag"].retry_delay_s)},
    params={
        "data": Param(D.data_dir, type="string", title="MNIST folder", description="IDX files (or MNIST/raw/...); relative to CLOUDTUNE_HOME"),
        "dataset": Param(D.dataset, type="string", enum=["mnist", "digits"], title="Data set", description="digits: scikit-learn's, offline"),
        "epochs": Param(D.epochs, type="integer", minimum=1, title="Epochs"),
        "batch_size": Param(D.batch_size, type="integer", minimum=1, title="Batch size"),
        "latent_dim": Param(D.latent_dim, type="integer", minimum=1, title="Latent dimension"),
        "lr": Param(D.lr, type="number", exclusiveMinimum=0, title="Learning rate"),
        "out": Param(D.out, type="string", title="Grid PNG", description="relative to CLOUDTUNE_HOME"),
        "device": Param(D.device, type="string", enum=list(DEVICES), title="Device"),
        "seed": Param(D.seed, type="integer", title="Seed"),
    },
)
def dream_generator():
    @task(pool=GPU, queue=GPU)
    def train(**context) -> dict:
        from pipeline.steps.dream import dream_from_params

        return dream_from_params(context["params"])

    train()


dream_generator()

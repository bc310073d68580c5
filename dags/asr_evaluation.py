"""
### asr_evaluation: WER/CER of a speech recognizer on a manifest, triggered from the UI

One task, `evaluate` (pool and Celery queue `gpu`): `cloudtune asr eval` as a task. It transcribes every file of the
manifest (TSV: audio path, reference text, optional language; relative audio paths from the manifest's folder, a relative
manifest path from `$CLOUDTUNE_HOME`), stores one `asr_results` row per file under the run id (the DAG run's id, made
path-safe; a retry replaces its rows), and writes `runs/<run_id>/reports/asr_eval.html`. Defaults: `configs/asr.yaml`.
The result (corpus WER/CER, report path) is the task's XCom; `cloudtune report asr_summary` lists the runs.
A bad manifest, or a run in which every file failed, fails the task without retries.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from pipeline.names import ASR_BACKENDS, DEVICES  # light: no imports of its own


def _settings():
    from pipeline import config  # light (PyYAML); the recognizer loads inside the task

    return config.load_asr(), config.load_airflow()


ASR, AIRFLOW = _settings()
GPU = AIRFLOW["pools"].gpu


@dag(
    dag_id="asr_evaluation",
    schedule=None,
    catchup=False,
    tags=["cloudtune", "asr"],
    doc_md=__doc__,
    default_args={"retries": AIRFLOW["dag"].retries, "retry_delay": timedelta(seconds=AIRFLOW["dag"].retry_delay_s)},
    params={
        "manifest": Param("", type="string", title="Manifest (TSV)", description="audio path<TAB>reference[<TAB>language]; relative to CLOUDTUNE_HOME"),
        "backend": Param(ASR.asr.backend, type="string", enum=list(ASR_BACKENDS), title="Backend"),
        "model": Param(ASR.qwen3_asr.model, type=["null", "string"], title="Model",
                       description="qwen3-asr: local directory or hub id (default configs/asr.yaml qwen3_asr.model)"),
        "device": Param(ASR.qwen3_asr.device, type="string", enum=list(DEVICES), title="Device"),
    },
)
def asr_evaluation():
    @task(pool=GPU, queue=GPU)
    def evaluate(**context) -> dict:
        from pipeline.steps.asr import evaluate_asr_from_params
        from pipeline.steps.bookkeeping import context_run_id

        return evaluate_asr_from_params(context["params"], context_run_id(context))

    evaluate()


asr_evaluation()

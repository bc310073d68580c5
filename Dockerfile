# CloudTune + Apache Airflow 3.3 image used by every Airflow service of docker-compose.yml (api-server, scheduler,
# dag-processor, triggerer, the CPU and the GPU Celery workers) and by search-api (`cloudtune serve`). The project is installed editable with its `airflow`
# extra plus the Celery, Redis and PostgreSQL providers, so dags/, plugins/, configs/ and sql/ are read from /opt/cloudtune.
# torch comes from PyPI (its Linux wheel carries CUDA, used by the worker on queue `gpu`; it runs on CPU elsewhere).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    CLOUDTUNE_HOME=/data/cloudtune

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 50000 airflow \
    && mkdir -p /opt/airflow /data/cloudtune \
    && chown airflow /opt/airflow /data/cloudtune

WORKDIR /opt/cloudtune
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install -e '.[airflow]' 'apache-airflow[celery,postgres,redis]==3.3.2'
COPY configs ./configs
COPY sql ./sql
COPY dags ./dags
COPY plugins ./plugins

USER airflow

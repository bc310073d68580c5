"""docker-compose.yml is valid (docker-compose config, the Debian package; no Docker engine needed) and wires what it should."""

import shutil
import subprocess

import pytest
import yaml
from conftest import IN_CI

from pipeline import config

ROOT = config.PROJECT_ROOT


@pytest.fixture(scope="module")
def compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        if IN_CI:
            pytest.fail("docker-compose is not installed (.ci/run installs the Debian package)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    quiet = subprocess.run([exe, "--env-file", ".env.example", "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    full = subprocess.run([exe, "--env-file", ".env.example", "config"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr
    return yaml.safe_load(full.stdout)


def test_compose_has_every_service(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                             "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "search-api"}
    assert services["postgres"]["image"] == "postgres:16"
    airflow = [s for name, s in services.items() if name.startswith("airflow")]
    assert all(s["build"]["context"] == str(ROOT) and s["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor" for s in airflow)
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://cloudtune:change-me@postgres:5432/airflow")
    assert env["CLOUDTUNE_DB_URL"].endswith("@postgres:5432/cloudtune") and env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")


def test_gpu_worker_takes_queue_gpu_with_an_nvidia_device(compose):
    gpu = compose["services"]["airflow-worker-gpu"]
    assert gpu["command"][-2:] == ["--queues", "gpu"] and gpu["environment"]["AIRFLOW__CELERY__POOL"] == "solo"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert compose["services"]["airflow-worker"]["command"][-2:] == ["--queues", "default"]
    assert config.load_airflow()["pools"].gpu == "gpu"


def test_search_api_serves_the_shared_home_with_a_key_and_is_ready_on_readyz(compose):
    api = compose["services"]["search-api"]
    assert api["command"] == ["cloudtune", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert api["healthcheck"]["test"][-1] == "http://localhost:8000/readyz"
    worker = compose["services"]["airflow-worker-gpu"]
    assert api["volumes"] == [worker["volumes"][0]] and str(api["volumes"][0]).startswith("cloudtune-data:/data/cloudtune")  # the workers' home
    env = api["environment"]
    assert env["CLOUDTUNE_HOME"] == worker["environment"]["CLOUDTUNE_HOME"] and env["CLOUDTUNE_DB_URL"] == worker["environment"]["CLOUDTUNE_DB_URL"]
    assert len(env["CLOUDTUNE_API_KEY"]) >= 16  # beyond loopback `cloudtune serve` refuses to start without one


def test_compose_refuses_to_start_without_secrets(tmp_path):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    p = subprocess.run([exe, "--env-file", str(empty), "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "set POSTGRES_PASSWORD in .env" in p.stderr + p.stdout


def test_dockerfile_installs_the_airflow_extra_at_the_pinned_version():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "'.[airflow]'" in dockerfile and "apache-airflow[celery,postgres,redis]==3.3.2" in dockerfile
    assert '"apache-airflow==3.3.2"' in (ROOT / "pyproject.toml").read_text()


def test_compose_runs_what_the_cluster_test_runs(compose):
    """docker-compose.yml is the multi-machine shape of `cloudtune airflow cluster` (tests/test_airflow_cluster.py runs that one):
    the same executor, pool, queues, settings and roles, health checks on each long-running role, and real logins."""
    from pipeline.airflow_cluster import cluster_env, processes

    ours = cluster_env("secret")
    services = compose["services"]
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__POOL", "AIRFLOW__CELERY__DEFAULT_QUEUE", "AIRFLOW__CORE__LOAD_EXAMPLES",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "AIRFLOW__DAG_PROCESSOR__STALE_BUNDLE_CLEANUP_INTERVAL"):
        assert {name: s["environment"].get(key) for name, s in services.items() if name.startswith("airflow")} == \
            {name: ours[key] for name in services if name.startswith("airflow")}, key
    assert ours["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False" and services["airflow-apiserver"]["environment"][
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    roles = sorted((p["args"][0], p["queue"]) if p["role"] != "worker" else ("celery worker", p["queue"]) for p in processes())
    compose_roles = sorted(("celery worker", s["command"][-1]) if s["command"][1] == "celery" else (s["command"][1], None)
                           for name, s in services.items() if name.startswith("airflow-") and name != "airflow-init")
    assert compose_roles == roles
    for name, s in services.items():
        if name.startswith("airflow-") and name != "airflow-init":
            assert s["healthcheck"]["test"], f"{name} has no health check"

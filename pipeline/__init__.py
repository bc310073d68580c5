"""CloudTune audio ML pipeline: plain, importable step functions; Airflow DAGs only wire them."""

__version__ = "0.1.0"

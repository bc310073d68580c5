-- Runs once, when the PostgreSQL volume is created: the metrics DB next to Airflow's metadata DB (POSTGRES_DB).
CREATE DATABASE cloudtune;

-- Runs once, when the postgres service initialises its data volume (POSTGRES_DB creates `mlflow`).
-- MLflow and Optuna each keep an Alembic version table: they must not share one database.
CREATE DATABASE optuna;

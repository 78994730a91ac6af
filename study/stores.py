"""A study's stores, MLflow's tracking store and Optuna's storage, resolved once, by the driver,
before Ray starts a trial (`resolve_stores`):

- Where. A relative SQLite file (`sqlite:///mlflow.db`, the form MLflow's docs use), `file:` URI
  or path becomes absolute against the driver's working directory: Ray runs every trial in a folder
  of its own, where a relative one names a fresh, empty store per trial.
- Without secrets. What the study stores (its record, Ray's pickled searcher and callbacks, the
  trials' params), logs or prints holds the URLs without passwords. Credentials reach MLflow's
  clients and the trials through the environment only: a tracking server's `user:password@` goes
  into MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (MLflow's clients read them; the workers
  of a local Ray, started after this, inherit them), a PostgreSQL password into PGPASSWORD (libpq
  reads it). A credentialed or relative $MLFLOW_TRACKING_URI is replaced by its safe, absolute form.

A variable the user already set is kept: the same value in the URL is fine, a different one is
refused in one line, since which of the two is right cannot be told. A password in the URL of
another database is refused too: its drivers read no such variable, and connect arguments handed
to SQLAlchemy would be pickled with Optuna's storage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import sqlalchemy

from contract import absolute_location, safe_uri, tracking_uri
from study.guards import StudyError
from trainables.tracking import ensure_sqlite_folder

DEFAULT_OPTUNA_DB = "optuna.db"
TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
USER_VAR, PASSWORD_VAR = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
PG_PASSWORD_VAR = "PGPASSWORD"
LIBPQ_DRIVERS = ("psycopg2", "psycopg")  # the PostgreSQL drivers built on libpq, which reads PGPASSWORD


@dataclass(frozen=True)
class Stores:
    """Where a study's MLflow runs and Optuna trials go: absolute where local, without passwords."""

    tracking_uri: str
    optuna_storage: str


def resolve_stores(tracking: str | None, storage: str | None) -> Stores:
    """The stores of a launch: `tracking` (else $MLFLOW_TRACKING_URI, else ./mlflow.db) and
    `storage` (else ./optuna.db), absolute, their credentials moved into the environment, a
    SQLite file's folder made."""
    resolve_environment()
    stores = Stores(tracking_uri=secure(absolute_location(tracking_uri(tracking)), "--tracking-uri"),
                    optuna_storage=secure(absolute_location(storage or f"sqlite:///{DEFAULT_OPTUNA_DB}"), "--storage"))
    try:
        ensure_sqlite_folder(stores.tracking_uri)
        ensure_sqlite_folder(stores.optuna_storage)
    except OSError as err:
        raise StudyError(f"cannot make the folder of a SQLite store: {err}") from None
    return stores


def resolve_environment() -> None:
    """$MLFLOW_TRACKING_URI made absolute and safe in this process's environment, so that neither
    the trials nor the commands this process starts (the figures) inherit a password or a
    relative store."""
    uri = os.environ.get(TRACKING_URI_VAR)
    if uri:
        os.environ[TRACKING_URI_VAR] = secure(absolute_location(uri), f"${TRACKING_URI_VAR}")


def secure(uri: str, what: str) -> str:
    """`uri` without its password, which goes into the variable its client reads."""
    if urlsplit(uri).scheme in ("http", "https"):
        return server_uri(uri, what)
    if "://" in uri and not uri.startswith(("sqlite:", "file:")):
        return database_url(uri, what)
    return uri


def server_uri(uri: str, what: str) -> str:
    """An MLflow server's URI without `user:password@`; both go into MLflow's variables."""
    parts = urlsplit(uri)
    if parts.username:
        give(USER_VAR, unquote(parts.username), f"the user in {what}")
    if parts.password:
        give(PASSWORD_VAR, unquote(parts.password), f"the password in {what}")
    return safe_uri(uri)


def database_url(url: str, what: str) -> str:
    """A database URL without its password: PostgreSQL's goes into PGPASSWORD; another's is refused."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url  # not a database URL (another MLflow scheme): nothing of ours to move
    if parsed.password is None:
        return url
    if parsed.get_backend_name() != "postgresql" or driver(parsed) not in LIBPQ_DRIVERS:
        raise StudyError(f"{what} {safe_uri(url)} holds a password, which would be written into the study's files: "
                         "pass the URL without it and give the password the way that database's driver reads it "
                         "(e.g. MySQL: ?read_default_file=~/.my.cnf)")
    give(PG_PASSWORD_VAR, parsed.password, f"the password in {what}")
    bare = sqlalchemy.engine.URL.create(parsed.drivername, username=parsed.username, host=parsed.host,
                                        port=parsed.port, database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False)  # URL.set(password=None) would keep it


def driver(url: sqlalchemy.engine.URL) -> str:
    try:
        return url.get_driver_name()
    except sqlalchemy.exc.NoSuchModuleError:
        return ""


def give(name: str, value: str, what: str) -> None:
    """Set variable `name` to `value` unless it is set already; then the two must agree."""
    have = os.environ.get(name)
    if have is None:
        os.environ[name] = value
    elif have != value:
        raise StudyError(f"{what} differs from ${name}; give it once (the environment is where it stays out of "
                         "the study's files)")

"""A study's stores (study/stores.py): resolved once, by the driver, absolute and without secrets.

Fast: relative SQLite URIs, `file:` URIs and paths made absolute; credentials in a tracking URI or
a PostgreSQL URL moved into the variables their clients read, agreeing with what the user set or
refused in one line; other databases' passwords refused.

Slow (real Ray, Optuna, MLflow): studies launched with relative SQLite stores (by flag and by
$MLFLOW_TRACKING_URI) land every trial's run in the one store in the working directory; a study
launched against MLflow's basic-auth server with `http://admin:PASSWORD@...` finishes with every
run in the server, and the password is in no file it wrote (the runs folder, the working directory,
the server's artifacts, Ray's session folder: bytes, pickles included) and in nothing it printed.
Each runs its own Ray with its own temp folder, so only its own files are searched.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml

from contract import absolute_location
from helpers import Namespace, loopback_command, run_to_end, study_env, trial_runs, wait_for
from study.guards import StudyError
from study.stores import resolve_environment, resolve_stores
from trainables.tracking import resolve_tracking_uri

CREDENTIAL_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No credential or tracking variable set, the working directory a fresh folder."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- where: absolute -------------------------------------------------------------------------------

def test_local_locations_become_absolute_against_the_working_directory(clean_env):
    here = str(clean_env)
    assert absolute_location("sqlite:///rel.db") == f"sqlite:///{here}/rel.db"
    assert absolute_location("sqlite:///./a/../b/m.db?timeout=20") == f"sqlite:///{here}/b/m.db?timeout=20"
    assert absolute_location("file:./mlruns") == f"file://{here}/mlruns"
    assert absolute_location("mlruns") == f"{here}/mlruns"
    for kept in ("sqlite:////abs/m.db", "sqlite://", "sqlite:///:memory:", "file:///abs/mlruns", "/abs/mlruns",
                 "http://127.0.0.1:5000", "postgresql://u@h/db", "mlflow-artifacts:/x"):
        assert absolute_location(kept) == kept


def test_stores_are_absolute_and_their_sqlite_folders_made(clean_env):
    stores = resolve_stores("sqlite:///sub/m.db", "sqlite:///other/o.db")
    assert stores.tracking_uri == f"sqlite:///{clean_env}/sub/m.db"
    assert stores.optuna_storage == f"sqlite:///{clean_env}/other/o.db"
    assert (clean_env / "sub").is_dir() and (clean_env / "other").is_dir()
    defaults = resolve_stores(None, None)
    assert (defaults.tracking_uri, defaults.optuna_storage) == (f"sqlite:///{clean_env}/mlflow.db",
                                                                f"sqlite:///{clean_env}/optuna.db")


def test_a_relative_mlflow_tracking_uri_becomes_absolute_in_the_environment_too(clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert resolve_stores(None, None).tracking_uri == f"sqlite:///{clean_env}/mlflow.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{clean_env}/mlflow.db"  # what subprocesses inherit


def test_a_single_trial_takes_a_relative_sqlite_uri_from_its_working_directory(clean_env):
    assert resolve_tracking_uri("sqlite:///runs/m.db") == f"sqlite:///{clean_env}/runs/m.db"
    assert (clean_env / "runs").is_dir()


# --- without secrets ---------------------------------------------------------------------------------

def test_tracking_credentials_move_into_mlflows_variables(clean_env):
    stores = resolve_stores("http://al%40ice:p%3Ass@127.0.0.1:5000", None)
    assert stores.tracking_uri == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "al@ice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p:ss"


def test_a_credentialed_mlflow_tracking_uri_is_replaced_by_its_safe_form(clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bob:s3cret@mlflow.example:443/")
    resolve_environment()
    assert os.environ["MLFLOW_TRACKING_URI"] == "https://mlflow.example:443/"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("bob", "s3cret")


def test_a_postgresql_password_moves_into_pgpassword(clean_env):
    stores = resolve_stores("postgresql://mlflow:pw1@db:5432/mlflow", "postgresql+psycopg2://optuna:pw1@db/optuna")
    assert stores.tracking_uri == "postgresql://mlflow@db:5432/mlflow"
    assert stores.optuna_storage == "postgresql+psycopg2://optuna@db/optuna"
    assert os.environ["PGPASSWORD"] == "pw1"


def test_values_the_user_set_are_kept_when_they_agree(clean_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "same")
    assert resolve_stores("http://alice:same@h:5000", None).tracking_uri == "http://h:5000"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "same"


@pytest.mark.parametrize(("variable", "value", "tracking", "storage", "says"), [
    ("MLFLOW_TRACKING_PASSWORD", "theirs", "http://alice:ours@h:5000", None,
     "the password in --tracking-uri differs from $MLFLOW_TRACKING_PASSWORD"),
    ("MLFLOW_TRACKING_USERNAME", "bob", "http://alice:ours@h:5000", None,
     "the user in --tracking-uri differs from $MLFLOW_TRACKING_USERNAME"),
    ("PGPASSWORD", "theirs", None, "postgresql://u:ours@h/optuna", "the password in --storage differs from $PGPASSWORD"),
])
def test_values_that_disagree_are_refused_in_one_line(clean_env, monkeypatch, variable, value, tracking, storage,
                                                      says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(StudyError) as err:
        resolve_stores(tracking, storage)
    text = str(err.value)
    assert text.startswith(says) and "\n" not in text and "ours" not in text and "theirs" not in text
    assert os.environ[variable] == value


@pytest.mark.parametrize("url", ["mysql://u:pw9@h/optuna", "postgresql+pg8000://u:pw9@h/optuna",
                                 "mssql+pyodbc://u:pw9@h/optuna"])
def test_another_databases_password_is_refused(clean_env, url):
    with pytest.raises(StudyError, match="holds a password") as err:
        resolve_stores("sqlite:///m.db", url)
    assert "pw9" not in str(err.value) and "\n" not in str(err.value)


# --- real studies --------------------------------------------------------------------------------------

SPEC = {  # two 1-epoch trials of an Optuna search, so that Optuna's storage is used (and pickled)
    "trial": {"dataset": "synthetic", "train_size": 256, "model": "smallcnn", "epochs": 1, "batch_size": 64,
              "limit_eval_images": 32, "corruption_source": "none", "valid_per_class": 4,
              "valid_corrupt_images": 16},
    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": 2,
               "space": {"beta": {"type": "float", "low": 1, "high": 9}}},
    "resources": {"cpus": 1}, "max_failures": 0,
}


@pytest.fixture
def ray_tmp():
    """Ray's temp folder for one test (RAY_TMPDIR): directly under /tmp, since Ray's socket paths
    must stay short; removed after."""
    folder = Path(tempfile.mkdtemp(prefix="mollify-ray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def study_in(*args: str) -> list[str]:
    """`python -m study` with a relative runs folder, on a loopback-only network."""
    return loopback_command([sys.executable, "-m", "study", "--runs-dir", "runs", *args])


@pytest.mark.slow
# The flag, end to end (a whole study); $MLFLOW_TRACKING_URI reaches the same resolution, which
# test_a_relative_mlflow_tracking_uri_becomes_absolute_in_the_environment_too checks without Ray.
@pytest.mark.parametrize("given", ["flag"])
def test_relative_sqlite_stores_keep_every_trial_in_the_one_store(tmp_path, ray_tmp, given):
    """`sqlite:///rel.db` used to make a store per trial in Ray's trial folders (the study said 0/2
    done); now every run lands in ./rel.db (or $MLFLOW_TRACKING_URI's ./mlflow.db), every Optuna
    trial in ./optuna.db, and the record holds them absolute."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    env = {**study_env(), "RAY_TMPDIR": str(ray_tmp), "MOLLIFY_NO_ESTIMATE": "1"}
    for name in CREDENTIAL_VARS:
        env.pop(name, None)
    db = "rel.db" if given == "flag" else "mlflow.db"
    flags = ["--tracking-uri", f"sqlite:///{db}"] if given == "flag" else []
    if given == "env":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    done = run_to_end(study_in("launch", "spec.yaml", "--name", "rel", *flags, "--storage",
                               "sqlite:///optuna.db", "--no-figures"), env=env, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    uri = f"sqlite:///{tmp_path / db}"
    record = json.loads((tmp_path / "runs" / "rel" / "study.json").read_text())
    assert (record["tracking_uri"], record["optuna_storage"]) == (uri, f"sqlite:///{tmp_path / 'optuna.db'}")
    _, parents, children = trial_runs(uri, "rel")
    assert len(parents) == 1 and [r.info.status for r in children] == ["FINISHED"] * 2
    trials = optuna.load_study(study_name="rel", storage=record["optuna_storage"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    strays = [p for p in ray_tmp.rglob("*.db")] + [p for p in tmp_path.rglob("*.db") if p.parent != tmp_path]
    assert not strays, strays  # no store made in a trial's folder
    status = run_to_end(study_in("status", "rel"), env=env, cwd=tmp_path, timeout=120)
    assert status.returncode == 0 and "finished; 2/2 finished" in status.stdout, status.stdout + status.stderr


# --- a password in the tracking URI, against MLflow's basic-auth server ----------------------------------

ADMIN = "admin"
PORT = 5000  # in a network namespace of its own, every port is free
SERVER = f"http://127.0.0.1:{PORT}"


def auth_config(folder: Path, password: str) -> Path:
    """MLflow's basic-auth config: the admin and its password (used once, to create the admin in
    the empty user store), users in a SQLite file of the server's folder."""
    config = configparser.ConfigParser()
    config["mlflow"] = {"default_permission": "NO_PERMISSIONS", "database_uri": f"sqlite:///{folder / 'auth.db'}",
                        "admin_username": ADMIN, "admin_password": password,
                        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
                        "auth_cache_ttl_seconds": "60"}  # one password hash a minute, not one a request
    path = folder / "basic_auth.ini"
    with open(path, "w") as file:
        config.write(file)
    return path


class CredentialedStudy:
    """MLflow's basic-auth server (SQLite backend, artifacts in its own folder) and a study launched
    against it with the admin's password in `--tracking-uri`, both in one loopback-only network
    namespace. Folders: `server/` (the server's files, its config holds the password: not searched),
    `cwd/` (the study's working directory: runs/, optuna.db), `logs/` (what each command printed),
    and Ray's temp folder."""

    def __init__(self, base: Path, ray_tmp: Path) -> None:
        self.password = "pw-" + secrets.token_hex(12)
        self.server, self.cwd, self.logs, self.ray_tmp = base / "server", base / "cwd", base / "logs", ray_tmp
        for folder in (self.server, self.cwd, self.logs, base / "home"):
            folder.mkdir()
        env = {**study_env(), "HOME": str(base / "home"), "RAY_TMPDIR": str(ray_tmp), "MOLLIFY_NO_ESTIMATE": "1"}
        for name in (*CREDENTIAL_VARS, "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "RAY_ADDRESS"):
            env.pop(name, None)
        self.env = env  # no credential anywhere in it
        self.ns = Namespace(env, self.logs)

    def start_server(self) -> None:
        env = {**self.env, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(self.server, self.password)),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        self.ns.start("mlflow", [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                                 "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1",
                                 "--backend-store-uri", f"sqlite:///{self.server / 'm.db'}",
                                 "--artifacts-destination", str(self.server / "artifacts")], env=env, cwd=self.server)
        up = lambda: self.ns.run(["curl", "-fsS", f"{SERVER}/health"]).returncode == 0 \
            or self.ns.groups["mlflow"].poll() is not None
        wait_for(up, 120, "MLflow's /health")
        assert self.ns.groups["mlflow"].poll() is None, self.ns.log("mlflow")

    def study(self, name: str, *args: str, env: dict | None = None, timeout: float = 240) -> tuple[int, str]:
        """Run `python -m study ...` in the namespace to its end: its exit code and what it printed
        (stdout and stderr, kept in logs/<name>.log)."""
        proc = self.ns.start(name, [sys.executable, "-m", "study", "--runs-dir", "runs", *args], env=env,
                             cwd=self.cwd)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            self.ns.stop(name, grace=10)
        return code, (self.logs / f"{name}.log").read_text()

    def with_credentials(self) -> dict:
        return {**self.env, "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": self.password}

    def runs(self) -> list[list[str]]:
        """[the statuses of the study's parent runs, of its trial runs], read as the admin."""
        probe = ("import json; from mlflow.tracking import MlflowClient; "
                 f"c = MlflowClient({SERVER!r}); runs = c.search_runs([c.get_experiment_by_name('creds').experiment_id]); "
                 "print(json.dumps([[r.info.status for r in runs if r.data.tags.get('mollify.kind') == kind] "
                 "for kind in ('study', 'trial')]))")
        done = self.ns.run([sys.executable, "-c", probe], env=self.with_credentials())
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def files(self) -> list[Path]:
        """Every file the study may have written: its working directory (runs/, optuna.db), the
        server's artifacts, Ray's temp folder (the session folders of this test's Ray only), and
        what the commands printed."""
        roots = (self.cwd, self.server / "artifacts", self.ray_tmp, self.logs)
        return [p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                and p.name != "mlflow.log"]  # the server's own log: not the study's

    def close(self) -> None:
        self.ns.close()



@pytest.fixture(scope="module")
def credentialed(tmp_path_factory):
    for program in ("unshare", "nsenter", "ip", "curl"):
        if shutil.which(program) is None:
            pytest.skip(f"needs `{program}` to run MLflow's server and the study on a loopback-only network")
    if os.geteuid() != 0:
        pytest.skip("needs root: `unshare --net` and `nsenter`")
    ray_tmp = Path(tempfile.mkdtemp(prefix="mollify-ray-"))
    study = CredentialedStudy(tmp_path_factory.mktemp("credentialed"), ray_tmp)
    try:
        study.start_server()
        (study.cwd / "spec.yaml").write_text(yaml.safe_dump(SPEC))
        study.launched = study.study("launch", "launch", "spec.yaml", "--name", "creds", "--no-figures",
                                     "--tracking-uri", f"http://{ADMIN}:{study.password}@127.0.0.1:{PORT}",
                                     "--storage", "sqlite:///optuna.db")
        yield study
    finally:
        study.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_study_with_a_password_in_its_tracking_uri_records_every_run_in_the_server(credentialed):
    code, printed = credentialed.launched
    assert code == 0, printed[-3000:] + credentialed.ns.log("mlflow")
    parents, children = credentialed.runs()
    assert parents == ["FINISHED"] and children == ["FINISHED"] * 2
    record = json.loads((credentialed.cwd / "runs" / "creds" / "study.json").read_text())
    assert record["tracking_uri"] == SERVER
    assert record["optuna_storage"] == f"sqlite:///{credentialed.cwd / 'optuna.db'}"
    code, printed = credentialed.study("status", "status", "creds", env=credentialed.with_credentials())
    assert code == 0 and "finished; 2/2 finished" in printed, printed


@pytest.mark.slow
def test_status_and_resume_take_credentials_from_the_environment_only(credentialed):
    """The record holds none: without MLFLOW_TRACKING_USERNAME/PASSWORD the server answers 401 and
    the command says which variables to set, in one line (a launch before Ray starts); with them,
    resume works."""
    for name, args in (("status-anonymous", ("status", "creds")),
                       ("launch-anonymous", ("launch", "spec.yaml", "--name", "anon", "--tracking-uri", SERVER))):
        code, printed = credentialed.study(name, *args)
        assert code == 2 and "401" in printed and "MLFLOW_TRACKING_USERNAME" in printed, printed
        assert len(printed.strip().splitlines()) == 1, printed
    assert not (credentialed.cwd / "runs" / "anon").exists()
    code, printed = credentialed.study("resume", "resume", "creds", "--no-figures", env=credentialed.with_credentials())
    assert code == 0 and "finished; 2/2 finished" in printed, printed[-3000:]


@pytest.mark.slow
def test_the_password_is_in_no_file_and_no_output(credentialed):
    """Searched as bytes (pickles too): the runs folder (study.json, study.log, Ray's tune/ state
    and the searcher's pickle), the working directory, the server's artifacts, Ray's session
    folder, and what launch, status and resume printed."""
    files = credentialed.files()
    names = {p.name for p in files}
    assert {"study.json", "study.log", "optuna.db", "launch.log"} <= names, sorted(names)
    assert any(p.suffix == ".pkl" for p in files) and any("session_" in str(p) for p in files)
    secret = credentialed.password.encode()
    leaked = [str(p) for p in files if secret in p.read_bytes()]
    assert not leaked, leaked

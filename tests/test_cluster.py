"""The cluster: `docker-compose.yml` (fast, parsed) and the same services run as plain processes,
with real studies through them, under faults and attack (slow).

Docker cannot run here (only the client is installed: no engine, no `docker compose`), so the
compose file is validated by parsing it with PyYAML: the services, MLflow's basic-auth app, secrets
only as `${...:?}` references (no password in any URL), `.env` ignored, pinned images and Python
dependencies, read-only datasets. The slow tests start the very services it declares, PostgreSQL 15
with password authentication and two databases (mlflow, optuna), MLflow's basic-auth server on it
with the compose file's auth config, and a two-node Ray cluster with token authentication, as plain
processes, then run studies through them the way a user does inside the cluster
(`python -m study launch ... --address --tracking-uri http://... --storage postgresql://...`),
with every credential in the environment only: the smoke study; a study whose worker node is
killed mid-trial; a study during which the MLflow server restarts; nodes and drivers without the
token; requests without MLflow credentials; and a search of every file the studies wrote for the
secrets (docs/reliability.md sums them up).

Everything of the slow tests runs inside one network namespace whose only interface is loopback
(`unshare --net`, held open by a sleeping process and entered with `nsenter`), so no listener they
start is reachable from outside the machine. Each service runs in its own process group: a test
stops one by its id, and the module fixture stops all of them, even on failure.
"""

from __future__ import annotations

import configparser
import io
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from helpers import Namespace, wait_for

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
AUTH_INI = REPO / "docker" / "mlflow-auth.ini"
RAY_SERVICES = ("ray-head", "ray-worker")


# --- docker-compose.yml, parsed ------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def argv_of(service: dict) -> list[str]:
    cmd = service.get("command", "")
    return [str(a) for a in cmd] if isinstance(cmd, list) else shlex.split(cmd)


def command_text(service: dict) -> str:
    return " ".join(argv_of(service))


def option(service: dict, name: str) -> str:
    """The value of `--name value` or `--name=value` in the service's command."""
    argv = argv_of(service)
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"no {name} in {argv}")


def env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def mounts_of(service: dict) -> dict[str, str]:
    """target path -> source (volume name or host path) of the service's volumes."""
    return {target: source for source, target, _ in volumes_of(service)}


def volumes_of(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each of the service's volumes; a source may hold a colon
    (`${DATA_DIR:-./data}`), a target does not."""
    found = []
    for vol in service.get("volumes") or []:
        if not isinstance(vol, str):
            found.append((vol.get("source"), vol["target"], "ro" if vol.get("read_only") else "rw"))
            continue
        rest, _, mode = vol.rpartition(":")
        if mode not in ("ro", "rw"):
            rest, mode = vol, "rw"
        source, _, target = rest.rpartition(":")
        found.append((source, target, mode))
    return found


def test_compose_declares_the_cluster_services(compose):
    services = compose["services"]
    assert {"ray-head", "ray-worker", "mlflow", "postgres"} <= set(services)
    head, worker = services["ray-head"], services["ray-worker"]
    assert argv_of(head)[:3] == ["ray", "start", "--head"] and "--block" in argv_of(head)
    assert option(head, "--port") == "6379"
    assert argv_of(worker)[:2] == ["ray", "start"] and "--block" in argv_of(worker)
    assert option(worker, "--address") == "ray-head:6379"


def test_workers_reserve_nvidia_gpus_and_large_shm(compose):
    worker = compose["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "replicas" in worker["deploy"]  # N workers
    for name in RAY_SERVICES:
        shm = str(compose["services"][name]["shm_size"]).lower()
        assert shm.endswith("gb") and int(shm[:-2]) >= 8, (name, shm)


def test_mlflow_server_uses_postgres_and_accepts_the_service_name(compose):
    mlflow = compose["services"]["mlflow"]
    assert argv_of(mlflow)[:2] == ["mlflow", "server"]
    backend = option(mlflow, "--backend-store-uri")
    assert backend.startswith("postgresql://") and backend.endswith("@postgres:5432/mlflow")
    assert set(option(mlflow, "--allowed-hosts").split(",")) >= {"mlflow:*", "localhost:*", "127.0.0.1:*"}
    assert option(mlflow, "--host") == "0.0.0.0" and option(mlflow, "--port") == "5000"
    assert option(mlflow, "--artifacts-destination") in mounts_of(mlflow)  # a volume, not the container
    depends = compose["services"]["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"


def test_postgres_creates_two_databases(compose):
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:15")
    env = env_of(pg)
    assert env["POSTGRES_DB"] == "mlflow"
    init = mounts_of(pg)
    assert init.get("/docker-entrypoint-initdb.d") == "./docker/postgres-init"
    scripts = sorted((REPO / "docker" / "postgres-init").iterdir())
    text = "".join(s.read_text() for s in scripts)
    assert re.search(r"CREATE DATABASE\s+optuna", text, re.I)
    assert "healthcheck" in pg


def test_ray_token_comes_from_the_environment(compose):
    for name in RAY_SERVICES:
        env = env_of(compose["services"][name])
        assert env["RAY_AUTH_MODE"] == "token"
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?[^}]*\}", env["RAY_AUTH_TOKEN"]), env["RAY_AUTH_TOKEN"]
    # no literal secret anywhere in the file
    for line in COMPOSE.read_text().splitlines():
        if "RAY_AUTH_TOKEN" in line and not line.lstrip().startswith("#"):
            assert "${RAY_AUTH_TOKEN" in line or line.strip().startswith("- RAY_AUTH_TOKEN"), line


def test_every_ray_node_mounts_the_shared_runs_volume_at_the_same_path(compose):
    targets = [{t: s for t, s in mounts_of(compose["services"][n]).items() if s in compose.get("volumes", {})}
               for n in RAY_SERVICES]
    shared = set(targets[0].items())
    for t in targets[1:]:
        shared &= set(t.items())
    assert shared, targets
    runs = [t for t, _ in shared if t.startswith("/shared")]
    assert runs == ["/shared"], shared
    assert "--runs-dir /shared/runs" in COMPOSE.read_text()


def test_images_build_from_the_project_dockerfile_on_the_installed_ray(compose):
    import ray

    for name in (*RAY_SERVICES, "mlflow"):
        build = compose["services"][name]["build"]
        assert build["dockerfile"] == "docker/Dockerfile" and build["context"] == ".", name
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+rayproject/ray:(\S+)", dockerfile, re.M).group(1)
    assert base.split("-")[0] == ray.__version__, (base, ray.__version__)
    assert "-gpu" in base
    assert "-c constraints.txt" in dockerfile
    for name in ("ray-head", "ray-worker", "mlflow", "postgres"):
        assert "healthcheck" in compose["services"][name], name
    assert compose["services"]["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_the_image_copies_every_package_the_project_installs():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for name in (pattern.rstrip("*") for pattern in packages["include"]):
        assert re.search(rf"^COPY\s.*\b{name} \./{name}$", dockerfile, re.M), name


# --- secrets and pins, parsed ---------------------------------------------------------------------

SECRET_REF = r"\$\{%s:\?[^}]*\}"  # ${NAME:?message}: from the environment or .env, required


def volume_modes(service: dict) -> dict[str, str]:
    """target path -> mode (ro, rw) of the service's volumes."""
    return {target: mode for _, target, mode in volumes_of(service)}


def strings_in(node) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *strings_in(v))]
    if isinstance(node, list):
        return [s for v in node for s in strings_in(v)]
    return [str(node)]


def test_mlflow_runs_the_basic_auth_app_with_the_admin_password_from_the_environment(compose):
    mlflow = compose["services"]["mlflow"]
    assert option(mlflow, "--app-name") == "basic-auth"
    env = env_of(mlflow)
    assert re.fullmatch(SECRET_REF % "MLFLOW_ADMIN_PASSWORD", env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert re.fullmatch(SECRET_REF % "MLFLOW_SECRET_KEY", env["MLFLOW_FLASK_SERVER_SECRET_KEY"])
    assert mounts_of(mlflow)[env["MLFLOW_AUTH_CONFIG_PATH"]] == "./docker/mlflow-auth.ini"
    assert volume_modes(mlflow)[env["MLFLOW_AUTH_CONFIG_PATH"]] == "ro"
    config = configparser.ConfigParser()
    config.read_string(AUTH_INI.read_text())
    auth = config["mlflow"]
    assert "admin_password" not in auth and auth["default_permission"] == "NO_PERMISSIONS"
    users = auth["database_uri"].removeprefix("sqlite:///")
    assert users.startswith("/mlauth/") and mounts_of(mlflow)["/mlauth"] in compose["volumes"]
    for name in RAY_SERVICES:  # the driver and the trials authenticate through the environment
        ray_env = env_of(compose["services"][name])
        assert ray_env["MLFLOW_TRACKING_USERNAME"] == auth["admin_username"]
        assert re.fullmatch(SECRET_REF % "MLFLOW_ADMIN_PASSWORD", ray_env["MLFLOW_TRACKING_PASSWORD"])
        assert int(ray_env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) >= 10  # rides out an MLflow restart


def test_no_secret_is_written_into_the_compose_file_or_a_url(compose):
    """Passwords and tokens are `${...:?}` references, and no URL carries one: PostgreSQL clients
    read PGPASSWORD, so a study's record holds its storage URL without a password."""
    for name, service in compose["services"].items():
        for key, value in env_of(service).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), (name, key, value)
    for text in strings_in(compose):
        text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)  # ${VAR:-default} -> default
        for url in re.findall(r"[a-z+]+://\S+", text):
            assert urlsplit(url).password is None, url
    for name in ("mlflow", *RAY_SERVICES):
        assert re.fullmatch(SECRET_REF % "POSTGRES_PASSWORD", env_of(compose["services"][name])["PGPASSWORD"])


def test_env_file_stays_out_of_git_and_of_the_image():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert ignored.returncode == 0, "`.env` is not in .gitignore"
    assert ".env" in (REPO / "docker" / "Dockerfile.dockerignore").read_text().split()


def test_every_image_is_pinned_and_the_project_image_carries_the_project_version(compose):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            assert image == f"mollify-lab:{version}", (name, image)
        else:
            assert "@sha256:" in image or re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?(-[\w.-]+)?", image), image
    for base in re.findall(r"^FROM\s+(\S+)", (REPO / "docker" / "Dockerfile").read_text(), re.M):
        assert "@sha256:" in base or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?", base), base


def test_the_image_pins_every_python_dependency():
    """docker/requirements.lock pins (==) every run-time dependency of the project, transitively,
    agrees with constraints.txt, and the Dockerfile installs with it."""
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "-c docker/requirements.lock" in dockerfile and "docker/requirements.lock" in dockerfile.split("RUN pip")[0]
    lines = [line for line in (REPO / "docker" / "requirements.lock").read_text().splitlines()
             if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.+]+", line) for line in lines), lines
    lock = dict(line.split("==") for line in lines)
    sys.path.insert(0, str(REPO / "docker"))
    try:
        import lock as locker
    finally:
        sys.path.remove(str(REPO / "docker"))
    run_time = locker.closure()
    missing = set(run_time) - set(lock)
    assert not missing, f"run `python docker/lock.py > docker/requirements.lock`: {sorted(missing)} unpinned"
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, pinned = line.split("==")
            if name.strip().lower() in run_time:  # a pin of the test extra only (kubernetes-validate) is not in the image
                assert lock[name.strip().lower()] == pinned.strip(), line


def test_datasets_are_mounted_read_only_on_the_ray_nodes(compose):
    for name in RAY_SERVICES:
        modes = volume_modes(compose["services"][name])
        assert modes["/app/data"] == "ro", (name, modes)


# --- the same services as plain processes, on loopback -------------------------------------------

PG_PORT, MLFLOW_PORT, RAY_PORT = 5432, 5000, 6379  # a fresh network namespace has every port free
TRACKING = f"http://127.0.0.1:{MLFLOW_PORT}"
RAY_ADDRESS = f"127.0.0.1:{RAY_PORT}"
PG_URL = f"postgresql://postgres@127.0.0.1:{PG_PORT}"  # no password in a URL: libpq reads $PGPASSWORD
ADMIN = "admin"

# A small synthetic study whose trials last long enough to be interrupted (about 2 s an epoch on
# an idle core), retried from their checkpoints by Ray (max_failures).
FAULT_SPEC = {
    "trial": {"dataset": "synthetic", "train_size": 1536, "model": "smallcnn", "epochs": 5, "batch_size": 64,
              "lr": 0.05, "limit_eval_images": 200, "corruption_source": "none", "valid_per_class": 10,
              "valid_corrupt_images": 32},
    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": 2,
               "space": {"beta": {"type": "float", "low": 1, "high": 9}, "roles": ["xn", "xb", "xnb"]}},
    "resources": {"cpus": 1}, "max_concurrent": 2, "max_failures": 2,
}

PROBE = r'''
"""Runs inside the namespace: what the services hold, as JSON on stdout. Credentials (MLflow, PostgreSQL)
come from the environment, like everything else's."""
import json, os, sys, time, base64, urllib.request, urllib.error

def trial_runs(tracking, experiment):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    out = []
    for r in found:
        run = {"kind": r.data.tags.get("mollify.kind"), "status": r.info.status, "id": r.info.run_id,
               "trial_id": r.data.tags.get("mollify.trial_id"), "parent": r.data.tags.get("mlflow.parentRunId"),
               "start": r.info.start_time, "end": r.info.end_time, "metrics": sorted(r.data.metrics),
               "artifact_uri": r.info.artifact_uri}
        if run["kind"] == "trial":
            run["epochs"] = [[m.step, m.timestamp] for m in client.get_metric_history(r.info.run_id, "train/loss")]
        if run["kind"] == "study":
            run["artifacts"] = [f.path for f in client.list_artifacts(r.info.run_id, "study")]
        out.append(run)
    return out

def wait_epoch(tracking, experiment, epoch, timeout):
    """Until a running trial has logged `epoch` epochs: that run's id."""
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline:
        try:
            for run in trial_runs(tracking, experiment):
                if run["kind"] == "trial" and run["status"] == "RUNNING" and len(run["epochs"]) >= int(epoch):
                    return run["id"]
        except Exception:
            pass
        time.sleep(2)
    raise SystemExit(f"no trial of {experiment} reached epoch {epoch} in {timeout} s")

def optuna_states(storage, name):
    import optuna
    return [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]

def nodes(address):
    import ray
    ray.init(address=address, logging_level="ERROR")
    found = {"nodes": [{"id": n["NodeID"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU")}
                       for n in ray.nodes()]}
    from ray._private import state  # private API: where the trials' actors ran (GCS keeps dead ones)
    found["trial_actor_nodes"] = [a["Address"]["NodeID"] for a in state.actors().values()
                                  if "ImplicitFunc" in a.get("ActorClassName", "")
                                  or "flatten_point" in a.get("ActorClassName", "")]
    return found

def tune_trials(path):
    from ray.tune import ExperimentAnalysis
    return [{"id": t.trial_id, "status": t.status, "failures": t.num_failures,
             "iteration": (t.last_result or {}).get("training_iteration"),
             "since_restore": (t.last_result or {}).get("iterations_since_restore")}
            for t in ExperimentAnalysis(path).trials]

def http(url, user, password, host):
    """The status of a REST request as `user` (none when empty), with the Host header `host`."""
    headers = {"Host": host} if host else {}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code

COMMANDS = {"runs": trial_runs, "wait-epoch": wait_epoch, "optuna": optuna_states, "nodes": nodes,
            "tune": tune_trials, "http": http}
print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
'''


def need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/lib/postgresql/15/bin")
    if path is None:
        pytest.skip(f"needs `{program}` (PostgreSQL 15 server programs / util-linux) to run the cluster services")
    return path


class Cluster:
    """The compose file's services on loopback: PostgreSQL 15 with password authentication (databases
    mlflow and optuna), MLflow's basic-auth server on it with the compose file's auth config, and a
    two-node Ray cluster with token authentication. Secrets live only in the environment."""

    def __init__(self, work: Path, svc: Path) -> None:
        self.work, self.svc = work, svc
        self.token, self.pg_password = secrets.token_hex(16), "pg-" + secrets.token_hex(12)
        self.mlflow_password = "mlflow-" + secrets.token_hex(12)
        pg_bin = Path(need("initdb")).resolve().parent
        (work / "logs").mkdir()
        (work / "probe.py").write_text(PROBE)
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{pg_bin}:{os.environ['PATH']}", "HOME": str(svc / "home"),
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "PGPASSWORD": self.pg_password,
                    "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
                    **compose_client_env(), "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
        for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(key, None)
        (svc / "home").mkdir()
        self.ns = Namespace(self.env, work / "logs")

    # --- the services ---

    def start(self) -> None:
        self.start_postgres()
        self.start_mlflow()
        self.start_ray_head()
        self.start_ray_worker("ray-worker", cpus=1)
        wait_for(lambda: self.ns.run(["curl", "-fsS", f"{TRACKING}/health"]).returncode == 0
                 or self.ns.groups["mlflow"].poll() is not None, 240, "MLflow's /health")
        assert self.ns.groups["mlflow"].poll() is None, self.ns.log("mlflow")
        self.wait_nodes(2)

    def start_postgres(self) -> None:
        (self.svc / "pwfile").write_text(self.pg_password)
        shutil.chown(self.svc / "pwfile", user="nobody")
        as_nobody = ["runuser", "-u", "nobody", "--"]
        init = self.ns.run([*as_nobody, "initdb", "-D", str(self.svc / "pg"), "-U", "postgres", "-E", "UTF8",
                            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={self.svc / 'pwfile'}"])
        assert init.returncode == 0, init.stdout + init.stderr
        started = self.ns.run([*as_nobody, "pg_ctl", "-D", str(self.svc / "pg"), "-l", str(self.svc / "postgres.log"),
                               "-w", "-o", f"-p {PG_PORT} -k {self.svc} -c listen_addresses=127.0.0.1", "start"])
        assert started.returncode == 0, started.stdout + (self.svc / "postgres.log").read_text()
        for db in ("mlflow", "optuna"):
            made = self.ns.run(["createdb", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", db])
            assert made.returncode == 0, made.stderr

    def stop_postgres(self) -> None:
        self.ns.run(["runuser", "-u", "nobody", "--", "pg_ctl", "-D", str(self.svc / "pg"), "-m", "fast", "-w", "stop"])

    def start_mlflow(self) -> subprocess.Popen:
        """The compose file's MLflow command with loopback addresses, its auth config with a
        loopback auth database, and the same environment variables (values from `.env` there)."""
        mlflow = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]
        ini = self.svc / "basic_auth.ini"
        if not ini.exists():
            ini.write_text(loopback_auth_config(self.svc / "basic_auth.db"))
        argv = argv_of(mlflow)
        swap = {"--backend-store-uri": f"{PG_URL}/mlflow", "--artifacts-destination": str(self.work / "artifacts"),
                "--host": "127.0.0.1", "--port": str(MLFLOW_PORT)}
        argv = [swap.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
        env = {**self.env, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.mlflow_password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        return self.ns.start("mlflow", [sys.executable, "-m", *argv, "--workers", "1"], env=env, cwd=self.svc)

    def mlflow_up(self) -> bool:
        return self.ns.run(["curl", "-fsS", f"{TRACKING}/health"]).returncode == 0

    def ray(self) -> str:
        return str(Path(sys.executable).parent / "ray")

    def start_ray_head(self) -> None:
        self.ns.start("ray-head", [self.ray(), "start", "--head", "--block", "--port", str(RAY_PORT),
                                   "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
                                   "--include-dashboard", "false", "--disable-usage-stats",
                                   "--temp-dir", str(self.svc / "ray")])
        wait_for(lambda: "Ray runtime started" in self.ns.log("ray-head"), 90, "the Ray head")

    def start_ray_worker(self, name: str, cpus: int, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.ns.start(name, [self.ray(), "start", "--address", RAY_ADDRESS, "--block",
                                    "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", "0",
                                    "--disable-usage-stats"], env=env)

    def wait_nodes(self, count: int, timeout: float = 120) -> list[dict]:
        def alive():
            nodes = [n for n in self.probe("nodes", RAY_ADDRESS)["nodes"] if n["alive"]]
            return nodes if len(nodes) == count else None
        return wait_for(alive, timeout, f"{count} Ray nodes alive", interval=1)

    def close(self) -> None:
        try:
            self.ns.close()
        finally:
            self.stop_postgres_outside()

    def stop_postgres_outside(self) -> None:
        """pg_ctl stops the server by its pid file: no network needed, so it works after the namespace."""
        subprocess.run(["runuser", "-u", "nobody", "--", "pg_ctl", "-D", str(self.svc / "pg"), "-m", "fast", "-w",
                        "stop"], env=self.env, capture_output=True, timeout=60)

    # --- commands in the namespace ---

    def probe(self, *args: str, timeout: float = 120):
        done = self.ns.run([sys.executable, str(self.work / "probe.py"), *args], timeout=timeout)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def study_argv(self, preset: str, name: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "study", "--runs-dir", str(self.work / "runs"), "launch", preset,
                "--name", name, "--address", RAY_ADDRESS, "--tracking-uri", TRACKING,
                "--storage", f"{PG_URL}/optuna", "--no-figures", *extra]

    def launch(self, preset: str, name: str, *extra: str) -> subprocess.Popen:
        return self.ns.start(f"study-{name}", self.study_argv(preset, name, *extra), cwd=self.work)

    def finish(self, name: str, timeout: float) -> int:
        proc = self.ns.groups[f"study-{name}"]
        try:
            return proc.wait(timeout=timeout)
        finally:
            self.ns.stop(f"study-{name}", grace=10)

    def spec_file(self, name: str, spec: dict) -> str:
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return str(path)


def compose_client_env() -> dict[str, str]:
    """What the compose file sets for the MLflow clients on the Ray nodes (retries across an MLflow
    restart), with no `${...}` interpolation left in it."""
    env = env_of(yaml.safe_load(COMPOSE.read_text())["services"]["ray-head"])
    return {k: str(v) for k, v in env.items() if k.startswith("MLFLOW_HTTP_REQUEST")}


def loopback_auth_config(db: Path) -> str:
    """The compose file's MLflow auth config with its database on this machine."""
    config = configparser.ConfigParser()
    config.read_string(AUTH_INI.read_text())
    config["mlflow"]["database_uri"] = f"sqlite:///{db}"
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    for program in ("initdb", "pg_ctl", "createdb", "unshare", "nsenter", "ip", "ss", "curl", "runuser"):
        need(program)
    if os.geteuid() != 0:
        pytest.skip("needs root: `unshare --net` and PostgreSQL started as `nobody` via runuser")
    # PostgreSQL runs as `nobody`, which cannot enter pytest's private tmp folders; Ray's socket
    # paths must stay short: the services' own folder lives directly under /tmp.
    svc = Path(tempfile.mkdtemp(prefix="mollify-cluster-"))
    os.chmod(svc, 0o755)
    shutil.chown(svc, user="nobody")
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), svc)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(svc, ignore_errors=True)


def assert_each_epoch_once(runs: list[dict], epochs: int) -> None:
    for run in runs:
        assert [step for step, _ in run["epochs"]] == list(range(1, epochs + 1)), (run["id"], run["epochs"])


@pytest.mark.slow
@pytest.mark.cluster
def test_cluster_services_run_a_study_on_loopback(cluster):
    """The smoke study through the cluster, the way a user runs it inside: every trial and run
    recorded, the trials spread over both nodes, every listener on loopback."""
    cluster.launch("smoke", "smoke")
    rc = cluster.finish("smoke", timeout=300)
    logs = "\n".join([cluster.ns.log("study-smoke"), cluster.ns.log("mlflow"), cluster.ns.log("ray-head", 1500)])
    assert rc == 0, logs
    assert "[study] 4/4 trials done" in cluster.ns.log("study-smoke", 100_000), logs
    listening = cluster.ns.run(["ss", "-ltnuH"]).stdout
    interfaces = cluster.ns.run(["ip", "-brief", "addr"]).stdout

    # MLflow (PostgreSQL backend, basic auth): one study run and its four trial runs, with metrics
    runs = cluster.probe("runs", TRACKING, "smoke")
    parents = [r for r in runs if r["kind"] == "study"]
    children = [r for r in runs if r["kind"] == "trial"]
    assert len(parents) == 1 and len(children) == 4, runs
    assert parents[0]["status"] == "FINISHED"
    for run in children:
        assert run["status"] == "FINISHED" and run["parent"] == parents[0]["id"]
        assert {"clean/error", "train/loss", "corrupt/error"} <= set(run["metrics"])
    assert_each_epoch_once(children, 1)
    # artifacts went through the server into its artifact destination
    assert parents[0]["artifact_uri"].startswith("mlflow-artifacts:")
    assert {"study/spec.yaml", "study/record.json"} <= set(parents[0]["artifacts"])
    assert list((cluster.work / "artifacts").rglob("spec.yaml"))
    # Optuna (its own PostgreSQL database)
    assert cluster.probe("optuna", f"{PG_URL}/optuna", "smoke") == ["COMPLETE"] * 4
    # the MLflow server answers its service name and refuses other Host headers
    search = f"{TRACKING}/api/2.0/mlflow/experiments/search?max_results=1"
    assert cluster.probe("http", search, ADMIN, cluster.mlflow_password, "mlflow:5000") == 200
    assert cluster.probe("http", search, ADMIN, cluster.mlflow_password, "evil.example:5000") == 403

    # two Ray nodes, and the trials ran on both
    found = cluster.probe("nodes", RAY_ADDRESS)
    nodes = [n for n in found["nodes"] if n["alive"]]
    assert len(nodes) == 2 and all(n["cpus"] == 1 for n in nodes), found
    assert len(found["trial_actor_nodes"]) >= 4 and set(found["trial_actor_nodes"]) == {n["id"] for n in nodes}
    # one CPU per node and one per trial: two trials at once means one on each node
    spans = sorted((r["start"], r["end"]) for r in children)
    assert any(a[1] > b[0] for a, b in zip(spans, spans[1:])), spans

    # every listener of the namespace is on loopback, and loopback is its only interface
    assert [line.split()[0] for line in interfaces.splitlines()] == ["lo"]
    addresses = [line.split()[4] for line in listening.splitlines() if line.strip()]
    for port in (MLFLOW_PORT, RAY_PORT, PG_PORT):
        assert any(addr.endswith(f":{port}") for addr in addresses), (port, addresses)
    for addr in addresses:
        host = addr.rsplit(":", 1)[0].strip("[]").split("%")[0]
        if host in ("*", "0.0.0.0", "::"):  # every interface of this namespace: loopback only (above)
            continue
        ip = ipaddress.ip_address(host)
        assert ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback), addr


@pytest.mark.slow
@pytest.mark.cluster
def test_mlflow_refuses_requests_without_credentials(cluster):
    """MLflow's basic-auth app: 401 with no or a wrong password, 200 with the admin's from the
    environment; /health stays open for the compose healthcheck."""
    search = f"{TRACKING}/api/2.0/mlflow/experiments/search?max_results=1"
    assert cluster.probe("http", search, "", "", "") == 401
    assert cluster.probe("http", search, ADMIN, "wrong-password", "") == 401
    assert cluster.probe("http", search, ADMIN, cluster.mlflow_password, "") == 200
    assert cluster.probe("http", f"{TRACKING}/health", "", "", "") == 200
    anonymous = {k: v for k, v in cluster.env.items() if not k.startswith("MLFLOW_TRACKING_")}
    client = cluster.ns.run([sys.executable, "-c", f"from mlflow.tracking import MlflowClient; "
                             f"MlflowClient({TRACKING!r}).search_experiments()"], env=anonymous)
    assert client.returncode != 0 and "401" in client.stderr, client.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.cluster
def test_ray_refuses_a_node_and_a_driver_without_the_token(cluster):
    """A Ray node without the cluster's token does not join it (with none, or a wrong one), and a
    driver without it cannot connect."""
    home = cluster.svc / "intruder-home"  # no ~/.ray/auth_token there
    home.mkdir(exist_ok=True)
    outside = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    no_token = {**outside, "HOME": str(home)}
    wrong_token = {**outside, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    driver = [sys.executable, "-c", f"import ray; ray.init(address={RAY_ADDRESS!r})"]
    for env in (no_token, wrong_token):
        refused = cluster.ns.run(driver, env=env, timeout=120)
        assert refused.returncode != 0 and "Authentication" in refused.stderr, refused.stderr[-3000:]
    for label, env in (("intruder-none", no_token), ("intruder-wrong", wrong_token)):
        node = cluster.start_ray_worker(label, cpus=1, env=env)
        try:  # the GCS refuses it; `ray start` keeps asking, and never joins
            wait_for(lambda: "InvalidAuthToken" in cluster.ns.log(label) or node.poll() is not None, 90, label)
            assert "Authentication token is missing or incorrect" in cluster.ns.log(label), cluster.ns.log(label)
            assert len([n for n in cluster.probe("nodes", RAY_ADDRESS)["nodes"] if n["alive"]]) == 2
        finally:
            cluster.ns.stop(label, grace=10)


@pytest.mark.slow
@pytest.mark.cluster
def test_worker_node_killed_mid_study(cluster):
    """The node running a trial is killed (its processes, by their process group) mid-trial; a new
    node joins, as compose's `restart: unless-stopped` brings it back. The study completes with N
    trials and N runs; the interrupted trial continued from its checkpoint on the new node, in the
    same MLflow run, with no epoch logged twice."""
    # Two CPUs a trial: only the doomed node (two CPUs) can run one, not the head or the 1-CPU worker.
    spec = {**FAULT_SPEC, "resources": {"cpus": 2}, "max_concurrent": 1}
    cluster.start_ray_worker("doomed", cpus=2)
    cluster.wait_nodes(3)
    cluster.launch(cluster.spec_file("killed", spec), "killed")
    try:
        run_id = cluster.probe("wait-epoch", TRACKING, "killed", "2", "200", timeout=240)
        cluster.ns.stop("doomed", sig=signal.SIGKILL)  # the raylet, its object store and the trial's worker
        cluster.start_ray_worker("reborn", cpus=2)
        rc = cluster.finish("killed", timeout=300)
        assert rc == 0, cluster.ns.log("study-killed") + cluster.ns.log("reborn")
    finally:
        cluster.ns.groups.get("reborn") and cluster.ns.stop("reborn")
        cluster.ns.groups.get("study-killed") and cluster.ns.stop("study-killed")

    runs = [r for r in cluster.probe("runs", TRACKING, "killed") if r["kind"] == "trial"]
    assert len(runs) == 2 and len({r["trial_id"] for r in runs}) == 2, runs
    assert all(r["status"] == "FINISHED" for r in runs)
    assert run_id in {r["id"] for r in runs}  # the interrupted trial went on in its own run
    assert_each_epoch_once(runs, spec["trial"]["epochs"])
    trials = cluster.probe("tune", str(cluster.work / "runs" / "killed" / "tune"))
    assert len(trials) == 2 and all(t["status"] == "TERMINATED" for t in trials), trials
    retried = [t for t in trials if t["failures"] == 1]
    assert len(retried) == 1, trials
    # restored, not restarted: fewer iterations since the restore than the trial's epochs
    assert retried[0]["iteration"] == spec["trial"]["epochs"] > retried[0]["since_restore"], retried
    assert cluster.probe("optuna", f"{PG_URL}/optuna", "killed") == ["COMPLETE"] * 2


@pytest.mark.slow
@pytest.mark.cluster
def test_mlflow_server_restarted_mid_study(cluster):
    """The MLflow server stops while trials log (same port, same PostgreSQL and auth database when it
    comes back): the trials' MLflow clients retry (compose's MLFLOW_HTTP_REQUEST_* settings), so the
    study completes and every run has every epoch once, including epochs logged while it was down."""
    cluster.launch(cluster.spec_file("restarted", FAULT_SPEC), "restarted")
    try:
        cluster.probe("wait-epoch", TRACKING, "restarted", "1", "200", timeout=240)
        down = time.time() * 1000
        cluster.ns.stop("mlflow")
        time.sleep(5)  # trials keep training and logging meanwhile
        cluster.start_mlflow()
        wait_for(cluster.mlflow_up, 240, "MLflow back")
        up = time.time() * 1000
        rc = cluster.finish("restarted", timeout=300)
        assert rc == 0, cluster.ns.log("study-restarted") + cluster.ns.log("mlflow")
    finally:
        cluster.ns.groups.get("study-restarted") and cluster.ns.stop("study-restarted")
        if "mlflow" not in cluster.ns.groups:
            cluster.start_mlflow()

    runs = [r for r in cluster.probe("runs", TRACKING, "restarted") if r["kind"] == "trial"]
    assert len(runs) == 2 and all(r["status"] == "FINISHED" for r in runs), runs
    assert_each_epoch_once(runs, FAULT_SPEC["trial"]["epochs"])
    # some epochs were logged (client-side timestamps) while the server was down, and arrived
    during = [step for r in runs for step, ts in r["epochs"] if down < ts < up]
    assert during, (down, up, runs)
    assert cluster.probe("optuna", f"{PG_URL}/optuna", "restarted") == ["COMPLETE"] * 2


@pytest.mark.slow
@pytest.mark.cluster
def test_passwords_in_the_urls_move_to_the_environment(cluster):
    """`--tracking-uri http://admin:PW@...` and `--storage postgresql://postgres:PW@...` from a
    driver whose environment holds neither password: the driver moves them into
    MLFLOW_TRACKING_USERNAME/PASSWORD and PGPASSWORD (study/stores.py), the trials on the worker
    nodes use the nodes' own (as compose sets them), the study runs, and neither password is in its
    files (bytes, pickles included) or its output. test_secrets_never_land_in_the_study_files,
    after it, searches them again with every other study's."""
    env = {k: v for k, v in cluster.env.items()
           if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD")}
    swap = {"--tracking-uri": f"http://{ADMIN}:{cluster.mlflow_password}@127.0.0.1:{MLFLOW_PORT}",
            "--storage": f"postgresql://postgres:{cluster.pg_password}@127.0.0.1:{PG_PORT}/optuna"}
    argv = cluster.study_argv("smoke", "in-urls")
    argv = [swap.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    cluster.ns.start("study-in-urls", argv, env=env, cwd=cluster.work)
    rc = cluster.finish("in-urls", timeout=300)
    assert rc == 0, cluster.ns.log("study-in-urls")
    record = json.loads((cluster.work / "runs" / "in-urls" / "study.json").read_text())
    assert (record["tracking_uri"], record["optuna_storage"]) == (TRACKING, f"{PG_URL}/optuna")
    assert cluster.probe("optuna", f"{PG_URL}/optuna", "in-urls") == ["COMPLETE"] * 4
    runs = [r for r in cluster.probe("runs", TRACKING, "in-urls") if r["kind"] == "trial"]
    assert len(runs) == 4 and all(r["status"] == "FINISHED" for r in runs), runs
    files = [p for p in (cluster.work / "runs" / "in-urls").rglob("*") if p.is_file()]
    files.append(cluster.work / "logs" / "study-in-urls.log")  # what it printed
    assert any(p.suffix == ".pkl" for p in files)
    for secret in (cluster.mlflow_password, cluster.pg_password):
        assert not [str(p) for p in files if secret.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.cluster
def test_secrets_never_land_in_the_study_files(cluster):
    """The cluster's studies ran with the MLflow password, the PostgreSQL password and the Ray token
    in the environment only: none of them is in any file of the runs folder (study.json, study.log,
    Ray's pickled experiment and searcher state, trial folders, checkpoints), nor in the MLflow
    server's artifact store. Run alone (or first), it runs a study of its own to search."""
    if not list((cluster.work / "runs").glob("*/study.json")):
        cluster.launch("smoke", "secrets")
        assert cluster.finish("secrets", timeout=300) == 0, cluster.ns.log("study-secrets")
    files = [p for folder in ("runs", "artifacts") for p in (cluster.work / folder).rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p in files) and any(p.name == "study.log" for p in files), files
    for secret in (cluster.mlflow_password, cluster.pg_password, cluster.token):
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, leaked

"""The cluster: `docker-compose.yml` (fast, parsed) and the same services run as plain processes
with a real study through them (slow).

Docker cannot run here (only the client is installed: no engine, no `docker compose`), so the
compose file is validated by parsing it with PyYAML, and the next test starts the very services it
declares, PostgreSQL 15 with two databases (mlflow, optuna), an MLflow tracking server on that
PostgreSQL serving artifacts, and a two-node Ray cluster with token authentication, as plain
processes on loopback, then runs the `smoke` study through them the way a user does inside the
cluster (`python -m study launch ... --address --tracking-uri http://... --storage postgresql://...`).

Everything of the slow test runs inside one network namespace whose only interface is loopback
(`unshare --net`), so no listener it starts is reachable from outside the machine; a script in
that namespace starts the services, runs the study, checks the stores from inside the namespace
(writing a JSON summary for the test), and stops every service by its process group, even on
failure.
"""

from __future__ import annotations

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
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
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
    found = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol.get("source"), vol["target"]
        found[target] = source
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


# --- the same services as plain processes, on loopback -------------------------------------------

PG_PORT, MLFLOW_PORT, RAY_PORT = 5432, 5000, 6379  # a fresh network namespace has every port free

DRIVER = r"""
set -u
ip link set lo up
WORK="$1"; SVC="$2"; PY="$3"
PGURL=postgresql://postgres@127.0.0.1:{pg}
TRACKING=http://127.0.0.1:{mlflow}
RAY_ADDRESS_=127.0.0.1:{ray}
GROUPS_=""
log() {{ echo "[cluster $(date +%T)] $*"; }}
start() {{  # start a service in its own process group, remember the group
    local name="$1"; shift
    setsid "$@" >"$WORK/logs/$name.log" 2>&1 &
    LAST=$!; GROUPS_="$GROUPS_ $LAST"
    log "$name: pid $LAST"
}}
cleanup() {{
    log "stopping$GROUPS_"
    for g in $GROUPS_; do kill -TERM -- -"$g" 2>/dev/null; done
    for _ in $(seq 20); do
        alive=""; for g in $GROUPS_; do kill -0 -- -"$g" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break; sleep 0.5
    done
    for g in $GROUPS_; do kill -KILL -- -"$g" 2>/dev/null; done
    runuser -u nobody -- pg_ctl -D "$SVC/pg" -m fast -w stop >/dev/null 2>&1
    log "stopped"
}}
trap cleanup EXIT
mkdir -p "$WORK/logs" "$WORK/artifacts" "$WORK/runs"

log "postgres"
runuser -u nobody -- initdb -D "$SVC/pg" -U postgres --auth=trust -E UTF8 >"$WORK/logs/initdb.log" 2>&1 || exit 10
runuser -u nobody -- pg_ctl -D "$SVC/pg" -l "$SVC/postgres.log" -w \
    -o "-p {pg} -k $SVC -c listen_addresses=127.0.0.1" start >/dev/null || {{ cat "$SVC/postgres.log"; exit 11; }}
createdb -h 127.0.0.1 -p {pg} -U postgres mlflow && createdb -h 127.0.0.1 -p {pg} -U postgres optuna || exit 12

log "mlflow"
start mlflow "$PY" -m mlflow server --backend-store-uri "$PGURL/mlflow" --artifacts-destination "$WORK/artifacts" \
    --host 127.0.0.1 --port {mlflow} --workers 1 --allowed-hosts "mlflow:*,localhost:*,127.0.0.1:*"
MLFLOW_PID=$LAST

log "ray head"
RAY="$(dirname "$PY")/ray"
start ray-head "$RAY" start --head --block --port {ray} --node-ip-address 127.0.0.1 --num-cpus 1 --num-gpus 0 \
    --include-dashboard false --disable-usage-stats --temp-dir "$SVC/ray"
for _ in $(seq 120); do grep -q "Ray runtime started" "$WORK/logs/ray-head.log" && break; sleep 0.5; done
log "ray worker"
start ray-worker "$RAY" start --address $RAY_ADDRESS_ --block --node-ip-address 127.0.0.1 --num-cpus 1 --num-gpus 0 \
    --disable-usage-stats
for _ in $(seq 180); do
    curl -fsS $TRACKING/health >/dev/null 2>&1 && break
    kill -0 $MLFLOW_PID 2>/dev/null || break; sleep 0.5
done
curl -fsS $TRACKING/health >/dev/null || {{ tail -50 "$WORK/logs/mlflow.log"; exit 13; }}
for _ in $(seq 120); do
    n=$("$PY" -c "import ray; ray.init(address='$RAY_ADDRESS_', logging_level='ERROR'); print(sum(x['Alive'] for x in ray.nodes()))" 2>/dev/null)
    [ "$n" = 2 ] && break; sleep 1
done
log "ray nodes alive: ${{n:-?}}"

log "study"
ss -ltnH >"$WORK/listen-before.txt"
(cd "$WORK" && "$PY" -m study --runs-dir "$WORK/runs" launch smoke --address $RAY_ADDRESS_ --tracking-uri $TRACKING \
    --storage "$PGURL/optuna" --no-figures) >"$WORK/logs/study.log" 2>&1
echo $? >"$WORK/study.rc"
log "study rc $(cat "$WORK/study.rc")"
ss -ltnH >"$WORK/listen.txt"
ss -lunH >"$WORK/listen-udp.txt"
ip -brief addr >"$WORK/interfaces.txt"
"$PY" "$WORK/check.py" "$RAY_ADDRESS_" "$TRACKING" "$PGURL/optuna" "$WORK/summary.json" >"$WORK/logs/check.log" 2>&1
log "check rc $?"
"""

CHECK = r'''
"""Runs inside the namespace after the study: what the services hold, as JSON."""
import json, sys, urllib.request, urllib.error
import optuna, ray
from mlflow.tracking import MlflowClient

address, tracking, storage, out = sys.argv[1:5]
summary = {}
client = MlflowClient(tracking)
exp = client.get_experiment_by_name("smoke")
runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
summary["runs"] = [{"kind": r.data.tags.get("mollify.kind"), "status": r.info.status, "id": r.info.run_id,
                    "parent": r.data.tags.get("mlflow.parentRunId"), "start": r.info.start_time,
                    "end": r.info.end_time, "metrics": sorted(r.data.metrics)} for r in runs]
parents = [r for r in runs if r.data.tags.get("mollify.kind") == "study"]
summary["parent_artifacts"] = [f.path for f in client.list_artifacts(parents[0].info.run_id, "study")] if parents else []
summary["artifact_uri"] = parents[0].info.artifact_uri if parents else None
trials = optuna.load_study(study_name="smoke", storage=storage).trials
summary["optuna"] = [t.state.name for t in trials]
ray.init(address=address, logging_level="ERROR")
summary["nodes"] = [{"id": n["NodeID"], "alive": n["Alive"], "ip": n["NodeManagerAddress"],
                     "cpus": n["Resources"].get("CPU")} for n in ray.nodes()]
try:  # where the trials' actors ran (GCS keeps dead actors)
    from ray._private import state
    summary["trial_actor_nodes"] = [a["Address"]["NodeID"] for a in state.actors().values()
                                    if "ImplicitFunc" in a.get("ActorClassName", "")
                                    or "flatten_point" in a.get("ActorClassName", "")]
except Exception as err:  # private API: fall back to the overlap of the runs
    summary["trial_actor_nodes_error"] = repr(err)
def host_status(host):
    # /health and /version are exempt from the Host check: ask the REST API
    req = urllib.request.Request(tracking + "/api/2.0/mlflow/experiments/search?max_results=1",
                                 headers={"Host": host})
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code
summary["host_mlflow"], summary["host_evil"] = host_status("mlflow:5000"), host_status("evil.example:5000")
json.dump(summary, open(out, "w"), indent=2)
'''


def need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/lib/postgresql/15/bin")
    if path is None:
        pytest.skip(f"needs `{program}` (PostgreSQL 15 server programs / util-linux) to run the cluster services")
    return path


@pytest.mark.slow
def test_cluster_services_run_a_study_on_loopback(tmp_path):
    for program in ("initdb", "pg_ctl", "createdb", "unshare", "ip", "ss", "curl", "setsid"):
        need(program)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root: needs `runuser` to start PostgreSQL as an unprivileged user")
    if os.geteuid() != 0:
        pytest.skip("the driver runs PostgreSQL via `runuser -u nobody` and needs root for `unshare --net`")
    pg_bin = Path(need("initdb")).resolve().parent
    # PostgreSQL runs as `nobody`, which cannot enter pytest's private tmp folders; Ray's socket
    # paths must stay short: the services' own folder lives directly under /tmp.
    svc = Path(tempfile.mkdtemp(prefix="mollify-cluster-"))
    os.chmod(svc, 0o755)
    shutil.chown(svc, user="nobody")
    (tmp_path / "check.py").write_text(CHECK)
    script = tmp_path / "cluster.sh"
    script.write_text(DRIVER.format(pg=PG_PORT, mlflow=MLFLOW_PORT, ray=RAY_PORT))
    token = secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PATH": f"{pg_bin}:{os.environ['PATH']}",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(["unshare", "--net", "bash", str(script), str(tmp_path), str(svc), sys.executable],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:  # backstop: the whole namespace's session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(svc, ignore_errors=True)

    def logs() -> str:
        parts = [out]
        for f in sorted((tmp_path / "logs").glob("*.log")) if (tmp_path / "logs").exists() else []:
            parts.append(f"--- {f.name}\n{f.read_text()[-2500:]}")
        return "\n".join(parts)

    assert (tmp_path / "study.rc").exists() and (tmp_path / "study.rc").read_text().strip() == "0", logs()
    assert (tmp_path / "summary.json").exists(), logs()
    summary = json.loads((tmp_path / "summary.json").read_text())
    study_log = (tmp_path / "logs" / "study.log").read_text()
    assert "[study] 4/4 trials done" in study_log

    # MLflow (PostgreSQL backend): one study run and its four trial runs, with metrics
    parents = [r for r in summary["runs"] if r["kind"] == "study"]
    children = [r for r in summary["runs"] if r["kind"] == "trial"]
    assert len(parents) == 1 and len(children) == 4, summary["runs"]
    assert parents[0]["status"] == "FINISHED"
    for run in children:
        assert run["status"] == "FINISHED" and run["parent"] == parents[0]["id"]
        assert {"clean/error", "train/loss", "corrupt/error"} <= set(run["metrics"])
    # artifacts went through the server into its artifact destination
    assert summary["artifact_uri"].startswith("mlflow-artifacts:")
    assert {"study/spec.yaml", "study/record.json"} <= set(summary["parent_artifacts"])
    assert list((tmp_path / "artifacts").rglob("spec.yaml"))
    # Optuna (its own PostgreSQL database)
    assert summary["optuna"] == ["COMPLETE"] * 4
    # the MLflow server answers its service name and refuses other Host headers
    assert summary["host_mlflow"] == 200 and summary["host_evil"] == 403

    # two Ray nodes, and the trials ran on both
    nodes = [n for n in summary["nodes"] if n["alive"]]
    assert len(nodes) == 2 and all(n["cpus"] == 1 for n in nodes), summary["nodes"]
    if "trial_actor_nodes" in summary and summary["trial_actor_nodes"]:
        assert len(summary["trial_actor_nodes"]) >= 4
        assert set(summary["trial_actor_nodes"]) == {n["id"] for n in nodes}, summary
    # one CPU per node and one per trial: two trials at once means one on each node
    spans = sorted((r["start"], r["end"]) for r in children)
    assert any(a[1] > b[0] for a, b in zip(spans, spans[1:])), spans

    # every listener of the namespace is on loopback, and loopback is its only interface
    assert [line.split()[0] for line in (tmp_path / "interfaces.txt").read_text().splitlines()] == ["lo"]
    listening = [line.split()[3] for line in (tmp_path / "listen.txt").read_text().splitlines() if line.strip()]
    listening += [line.split()[3] for line in (tmp_path / "listen-udp.txt").read_text().splitlines() if line.strip()]
    assert any(addr.endswith(f":{MLFLOW_PORT}") for addr in listening)
    assert any(addr.endswith(f":{RAY_PORT}") for addr in listening)
    assert any(addr.endswith(f":{PG_PORT}") for addr in listening)
    for addr in listening:
        host = addr.rsplit(":", 1)[0].strip("[]").split("%")[0]
        if host in ("*", "0.0.0.0", "::"):  # every interface of this namespace: loopback only (above)
            continue
        ip = ipaddress.ip_address(host)
        assert ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback), addr

"""`python -m study kuberay PRESET|SPEC.yaml --name NAME [--workers N] [--gpus-per-worker G]
[--cpus-per-worker C] [--image IMAGE] [--namespace NS] [--set KEY=VALUE ...] [--out DIR] [--apply]`:
the study as Kubernetes manifests for the KubeRay operator, the cluster of docker-compose.yml
translated.

Writes into <runs dir>/NAME/kuberay/ (or --out) four files, each with a header saying how to apply
it: `rayjob.yaml`, a RayJob whose entrypoint is the study's driver (`study launch`, or `study resume`
when the study's record is already on the shared volume, so a resubmitted or retried RayJob
continues the study), with a head group (the driver only, as the compose file's head) and a worker
group sized from the options and the spec's per-trial resources; `mlflow.yaml`, MLflow's basic-auth
server on PostgreSQL; `postgres.yaml`, PostgreSQL with the databases `mlflow` and `optuna`;
`shared-storage.yaml`, the volume every Ray node mounts at /shared (the studies' runs) and
/app/data (datasets). Every secret comes from one Kubernetes Secret by reference; the command
prints how to make it, with shell variables in place of the values. --apply runs `kubectl apply`.

No Kubernetes cluster has run these manifests: tests/test_kuberay.py validates them against the
KubeRay RayJob CRD's schema (vendored under tests/schemas/kuberay/) and Kubernetes' own schemas.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import yaml

from contract import one_line, write_atomic
from study.guards import StudyError, check_name
from study.settings import passed_through
from study.spec import StudySpec, preset_names, read_source

REPO = Path(__file__).resolve().parents[1]
AUTH_INI = REPO / "docker" / "mlflow-auth.ini"  # MLflow's basic-auth config, as docker-compose.yml mounts it
POSTGRES_INIT = REPO / "docker" / "postgres-init" / "10-optuna.sql"  # creates the `optuna` database

# Mirrors of docker-compose.yml's choices (tests/test_kuberay.py checks that they agree).
POSTGRES_IMAGE = "postgres:15.18-bookworm"
POSTGRES_USER = "mollify"
MLFLOW_USER = "admin"  # docker/mlflow-auth.ini's admin_username: a name, not a secret
MLFLOW_PORT, POSTGRES_PORT = 5000, 5432
WORKDIR = "/app"  # docker/Dockerfile's WORKDIR: a relative data_root (`data`) resolves there
SHARED, RUNS_DIR, DATA_DIR = "/shared", "/shared/runs", "/app/data"
SPEC_DIR = "/etc/mollify/spec"  # where a spec file (not a preset) is mounted on the head
RUN_AS = {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100}  # the image's user `ray` (1000:100)

# One Secret holds every secret; each key is filled from the shell variable of docker-compose.yml's
# .env. KubeRay's authOptions.secretName requires the token under the key `auth_token`.
SECRET = "mollify-lab"
SECRET_KEYS = {"auth_token": "RAY_AUTH_TOKEN", "postgres-password": "POSTGRES_PASSWORD",
               "mlflow-admin-password": "MLFLOW_ADMIN_PASSWORD", "mlflow-secret-key": "MLFLOW_SECRET_KEY"}
SHARED_CLAIM, MLFLOW_CLAIM = "mollify-shared", "mlflow-data"
PART_OF = {"app.kubernetes.io/part-of": "mollify-lab"}

HEAD_CPUS, HEAD_MEMORY = 2, "8Gi"  # the driver, Ray's GCS and the figures at the end
MEMORY_PER_CPU_GI, MIN_WORKER_MEMORY_GI = 4, 8
MAX_RAYJOB_NAME = 47  # KubeRay 1.7's limit (its RayCluster and Service names are built on it)
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?")
CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
FILES = ("rayjob.yaml", "mlflow.yaml", "postgres.yaml", "shared-storage.yaml")


@dataclass(frozen=True)
class Cluster:
    """What the manifests ask Kubernetes for."""

    namespace: str
    image: str
    workers: int
    gpus_per_worker: int
    cpus_per_worker: int
    memory_per_worker: str

    @property
    def mlflow_uri(self) -> str:
        return f"http://mlflow.{self.namespace}:{MLFLOW_PORT}"

    def database(self, name: str) -> str:
        """A PostgreSQL URL without a password: libpq reads PGPASSWORD, which the pods get by reference."""
        return f"postgresql://{POSTGRES_USER}@postgres.{self.namespace}:{POSTGRES_PORT}/{name}"


# --- the command line ----------------------------------------------------------------------------

def add_parser(commands: Any) -> None:
    p = commands.add_parser("kuberay", help="the study as KubeRay manifests (a RayJob, MLflow, PostgreSQL); --apply applies them",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help=f"a preset ({', '.join(preset_names())}) or a spec file")
    p.add_argument("--name", required=True, help="study name (also names the RayJob)")
    p.add_argument("--workers", type=int, default=1, help="Ray worker pods (default 1)")
    p.add_argument("--gpus-per-worker", type=int, help="default: what one trial asks for, rounded up")
    p.add_argument("--cpus-per-worker", type=int, help="default: enough for the trials a worker's GPUs hold")
    p.add_argument("--memory-per-worker", help=f"a Kubernetes quantity (default {MEMORY_PER_CPU_GI}Gi per CPU, "
                   f"at least {MIN_WORKER_MEMORY_GI}Gi)")
    p.add_argument("--image", help="the project image (docker/Dockerfile) in a registry the cluster pulls from "
                   "(default mollify-lab:<version>, as docker-compose.yml tags it)")
    p.add_argument("--namespace", default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a trial config key for every trial; repeatable; passed to the driver")
    p.add_argument("--num-samples", type=int, help="Optuna searches: number of trials (passed to the driver)")
    p.add_argument("--gpus-per-trial", type=float, help="passed to the driver")
    p.add_argument("--cpus-per-trial", type=float, help="passed to the driver")
    p.add_argument("--max-concurrent", type=int, help="passed to the driver")
    p.add_argument("--out", type=Path, help="where to write the manifests (default <runs dir>/NAME/kuberay)")
    p.add_argument("--apply", action="store_true", help="then run `kubectl apply -f` on them")


def run(args: argparse.Namespace, spec_from_args: Callable[[argparse.Namespace], StudySpec]) -> int:
    """Validate everything, then write the manifests (nothing is written on a refusal), say what to
    run next, and apply them when asked."""
    spec = spec_from_args(args)
    check_name(spec.name)  # as `launch` would, before anything is written
    cluster = plan_cluster(spec, args)
    files = manifests(spec, args, cluster)
    out = args.out or args.runs_dir / spec.name / "kuberay"
    write(out, files)
    print_next_steps(out, spec, cluster)
    return apply(out, args.debug) if args.apply else 0


def plan_cluster(spec: StudySpec, args: argparse.Namespace) -> Cluster:
    """The worker pods from the options, defaulted from the spec's per-trial resources; a trial
    that fits no worker is refused here rather than left pending in the cluster."""
    check_positive(args.workers, "--workers")
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else math.ceil(spec.gpus)
    check_positive(gpus, "--gpus-per-worker", zero=True)
    if spec.gpus > gpus:
        raise StudyError(f"a trial asks for {spec.gpus:g} GPUs and a worker has {gpus}: "
                         f"give --gpus-per-worker {math.ceil(spec.gpus)} or more")
    per_worker = math.floor(gpus / spec.gpus + 1e-9) if spec.gpus > 0 else 1
    cpus = args.cpus_per_worker if args.cpus_per_worker is not None else max(1, math.ceil(per_worker * spec.cpus))
    check_positive(cpus, "--cpus-per-worker")
    if spec.cpus > cpus:
        raise StudyError(f"a trial asks for {spec.cpus:g} CPUs and a worker has {cpus}: "
                         f"give --cpus-per-worker {math.ceil(spec.cpus)} or more")
    memory = args.memory_per_worker or f"{max(MIN_WORKER_MEMORY_GI, MEMORY_PER_CPU_GI * cpus)}Gi"
    if not QUANTITY.fullmatch(memory):
        raise StudyError(f"--memory-per-worker {memory!r} is not a Kubernetes quantity (e.g. 32Gi)")
    if not DNS_1123.fullmatch(args.namespace) or len(args.namespace) > 63:
        raise StudyError(f"--namespace {args.namespace!r}: lower-case letters, digits and '-' (a DNS label)")
    image = args.image or f"mollify-lab:{metadata.version('mollify-lab')}"
    if not image.strip() or any(c.isspace() for c in image):
        raise StudyError(f"--image {image!r} is not an image reference")
    return Cluster(args.namespace, image, args.workers, gpus, cpus, memory)


def check_positive(value: int, flag: str, zero: bool = False) -> None:
    if value < 0 or (value == 0 and not zero):
        raise StudyError(f"{flag} {value}: give a whole number {'>= 0' if zero else '> 0'}")


def resource_name(study: str) -> str:
    """The RayJob's name: the study's, lower-cased, '_' and '.' as '-'; KubeRay wants a DNS-1035
    label of at most 47 characters."""
    name = re.sub(r"[_.]", "-", study.lower())
    if not DNS_1035.fullmatch(name) or len(name) > MAX_RAYJOB_NAME:
        raise StudyError(f"study name {study!r} cannot name a RayJob ({name!r}): start with a letter, end with a "
                         f"letter or digit, at most {MAX_RAYJOB_NAME} characters")
    return name


# --- the driver ------------------------------------------------------------------------------------

def spec_argument(preset: str) -> tuple[str, str | None]:
    """What the driver is given for the spec: a preset by name (the image has it), or the path of
    a spec file, which the head gets from a ConfigMap; and that file's key in the ConfigMap."""
    _, name = read_source(preset)
    if name != "custom":
        return name, None
    key = Path(preset).name
    if not CONFIGMAP_KEY.fullmatch(key):
        raise StudyError(f"spec file name {key!r}: letters, digits, '-', '_' and '.' only (it becomes a ConfigMap key)")
    return f"{SPEC_DIR}/{key}", key


def launch_argv(spec_arg: str, args: argparse.Namespace, cluster: Cluster, runs_dir: str = RUNS_DIR) -> list[str]:
    """`python -m study ... launch` as the driver runs it in the cluster, the command line's
    settings passed through unchanged."""
    argv = ["python", "-m", "study", "--runs-dir", runs_dir, "launch", spec_arg, "--name", args.name,
            "--address", "auto", "--tracking-uri", cluster.mlflow_uri, "--storage", cluster.database("optuna")]
    return argv + passed_through(args)


def driver_script(launch: list[str], name: str, workdir: str = WORKDIR, runs_dir: str = RUNS_DIR) -> str:
    """The driver as a POSIX shell script: resume when the study's record is already on the shared
    volume (a resubmitted RayJob, or KubeRay's retry on a new cluster), else launch."""
    resume = ["python", "-m", "study", "--runs-dir", runs_dir, "resume", name]
    record = f"{runs_dir}/{name}/study.json"
    return "\n".join([f"cd {shlex.quote(workdir)} || exit 3",
                      f"if [ -e {shlex.quote(record)} ]; then exec {shlex.join(resume)}; fi",
                      f"exec {shlex.join(launch)}"])


def entrypoint(script: str) -> str:
    """The RayJob's entrypoint. KubeRay pastes it unquoted into the submitter's `bash -c` line
    (`ray job submit ... -- ENTRYPOINT ; fi ; ...`), and Ray re-joins the words it gets with
    shlex.join and runs them with a shell: one quoted `sh -c SCRIPT` survives both shells intact."""
    return shlex.join(["sh", "-c", script])


# --- the manifests ---------------------------------------------------------------------------------

def manifests(spec: StudySpec, args: argparse.Namespace, cluster: Cluster) -> dict[str, str]:
    """{file name: YAML text}, each file a header and its documents."""
    job = resource_name(spec.name)
    spec_arg, spec_key = spec_argument(args.preset)
    script = driver_script(launch_argv(spec_arg, args, cluster), spec.name)
    spec_map = {spec_key: Path(args.preset).read_text()} if spec_key else None
    docs = {"rayjob.yaml": ([spec_configmap(job, cluster, spec_map)] if spec_map else [])
            + [rayjob(job, spec, cluster, entrypoint(script), spec_map is not None)],
            "mlflow.yaml": mlflow_docs(cluster), "postgres.yaml": postgres_docs(cluster),
            "shared-storage.yaml": [shared_claim(cluster)]}
    return {f: header(f, job, cluster) + yaml.dump_all(docs[f], Dumper=Readable, sort_keys=False, width=100)
            for f in FILES}


class Readable(yaml.SafeDumper):
    """Multi-line strings (the driver's script, the config files) as literal blocks, line for line
    as they run; no anchors and aliases, which a reader would have to resolve by eye."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


Readable.add_representer(str, _literal)


def meta(name: str, cluster: Cluster, app: str) -> dict[str, Any]:
    return {"name": name, "namespace": cluster.namespace,
            "labels": {"app.kubernetes.io/name": app, **PART_OF}}


def secret_env(var: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


def plain_env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def ray_env(cluster: Cluster) -> list[dict[str, Any]]:
    """docker-compose.yml's x-ray-env: token auth, where MLflow and Optuna are, MLflow's retries;
    every secret by reference."""
    return (plain_env({"RAY_AUTH_MODE": "token"}) + [secret_env("RAY_AUTH_TOKEN", "auth_token")]
            + plain_env({"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": cluster.mlflow_uri,
                         "MLFLOW_TRACKING_USERNAME": MLFLOW_USER})
            + [secret_env("MLFLOW_TRACKING_PASSWORD", "mlflow-admin-password")]
            + plain_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                         "MLFLOW_HTTP_REQUEST_TIMEOUT": "60", "OPTUNA_STORAGE": cluster.database("optuna")})
            + [secret_env("PGPASSWORD", "postgres-password")])


def ray_pod(container: dict[str, Any], cluster: Cluster, extra_volumes: list[dict[str, Any]],
            init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Ray node's pod template: the shared volume at /shared (runs) and its `data` folder at
    /app/data (datasets, which the driver prepares and the trials read), as on every compose node."""
    container = {"name": container["name"], "image": cluster.image, "env": ray_env(cluster),
                 "resources": container["resources"],
                 "volumeMounts": [{"name": "shared", "mountPath": SHARED},
                                  {"name": "shared", "mountPath": DATA_DIR, "subPath": "data"},
                                  *container.get("volumeMounts", [])]}
    spec: dict[str, Any] = {"securityContext": RUN_AS, "containers": [container],
                            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_CLAIM}},
                                        *extra_volumes]}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"labels": dict(PART_OF)}, "spec": spec}


def wait_for_mlflow(cluster: Cluster) -> dict[str, Any]:
    """The driver probes MLflow for 5 s and refuses to launch without it: the head waits for it."""
    probe = (f"import time, urllib.request\nwhile True:\n    try:\n"
             f"        urllib.request.urlopen('{cluster.mlflow_uri}/health', timeout=5); break\n"
             f"    except Exception as err:\n        print('waiting for MLflow:', err, flush=True); time.sleep(5)")
    return {"name": "wait-for-mlflow", "image": cluster.image, "command": ["python", "-c", probe]}


def quantities(cpus: int | str, memory: str, gpus: int = 0) -> dict[str, dict[str, str]]:
    """Requests equal to limits: the scheduler places what Ray is told the node has."""
    amounts = {"cpu": str(cpus), "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def rayjob(job: str, spec: StudySpec, cluster: Cluster, entry: str, has_spec_file: bool) -> dict[str, Any]:
    """The RayJob: a head that runs only the driver (no CPUs or GPUs offered to trials, as in the
    compose file) and one worker group sized for the trials."""
    spec_volume = [{"name": "spec", "configMap": {"name": f"{job}-spec"}}] if has_spec_file else []
    head = {"name": "ray-head", "resources": quantities(HEAD_CPUS, HEAD_MEMORY),
            "volumeMounts": [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}] if has_spec_file else []}
    worker = {"name": "ray-worker",
              "resources": quantities(cluster.cpus_per_worker, cluster.memory_per_worker, cluster.gpus_per_worker)}
    workers = {"groupName": "gpu-workers" if cluster.gpus_per_worker else "cpu-workers",
               "replicas": cluster.workers, "minReplicas": cluster.workers, "maxReplicas": cluster.workers,
               "rayStartParams": {"num-cpus": str(cluster.cpus_per_worker), "num-gpus": str(cluster.gpus_per_worker)},
               "template": ray_pod(worker, cluster, [])}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {**meta(job, cluster, "ray"), "annotations": {
            "mollify-lab/study": spec.name,
            "mollify-lab/trial-resources": f"cpus={spec.cpus:g} gpus={spec.gpus:g}"}},
        "spec": {
            "entrypoint": entry,
            "submissionMode": "K8sJobMode",
            "backoffLimit": 2,  # each retry is a new RayCluster, whose driver resumes the study
            "shutdownAfterJobFinishes": True,  # frees the GPUs; the study's state is on the volumes
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": {
                "rayVersion": metadata.version("ray"),
                "authOptions": {"mode": "token", "secretName": SECRET},  # also gives the submitter the token
                "headGroupSpec": {
                    "serviceType": "ClusterIP",  # Ray's ports stay inside the cluster
                    "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": ray_pod(head, cluster, spec_volume, [wait_for_mlflow(cluster)])},
                "workerGroupSpecs": [workers]}}}


def spec_configmap(job: str, cluster: Cluster, files: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{job}-spec", cluster, "ray"), "data": files}


def service(name: str, port: int, cluster: Cluster) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, cluster, name),
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
                     "ports": [{"name": name, "port": port, "targetPort": port}]}}


def claim(name: str, cluster: Cluster, size: str, mode: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(name, cluster, name),
            "spec": {"accessModes": [mode], "resources": {"requests": {"storage": size}}}}


def shared_claim(cluster: Cluster) -> dict[str, Any]:
    """Mounted by the head and every worker, on several nodes at once: ReadWriteMany, which needs a
    storage class that offers it (NFS, CephFS, a cloud file store)."""
    return claim(SHARED_CLAIM, cluster, "200Gi", "ReadWriteMany")


def mlflow_docs(cluster: Cluster) -> list[dict[str, Any]]:
    """docker-compose.yml's `mlflow` service: the basic-auth app on PostgreSQL, artifacts served
    from its own volume (workers need no object-store credentials), users in a SQLite file beside them."""
    hosts = ",".join(f"{h}:*" for h in ("mlflow", f"mlflow.{cluster.namespace}", f"mlflow.{cluster.namespace}.svc",
                                        f"mlflow.{cluster.namespace}.svc.cluster.local", "localhost", "127.0.0.1"))
    command = ["mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", cluster.database("mlflow"),
               "--artifacts-destination", "/mlartifacts", "--host", "0.0.0.0", "--port", str(MLFLOW_PORT),
               "--allowed-hosts", hosts]
    env = ([secret_env("PGPASSWORD", "postgres-password")]
           + plain_env({"MLFLOW_AUTH_CONFIG_PATH": "/etc/mlflow/basic_auth.ini"})
           + [secret_env("MLFLOW_AUTH_ADMIN_PASSWORD", "mlflow-admin-password"),
              secret_env("MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow-secret-key")])
    health = {"httpGet": {"path": "/health", "port": MLFLOW_PORT}, "periodSeconds": 10, "timeoutSeconds": 10}
    container = {"name": "mlflow", "image": cluster.image, "command": command, "env": env,
                 "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
                 "resources": quantities(2, "4Gi"),
                 "volumeMounts": [{"name": "data", "mountPath": "/mlartifacts", "subPath": "mlartifacts"},
                                  {"name": "data", "mountPath": "/mlauth", "subPath": "mlauth"},
                                  {"name": "auth", "mountPath": "/etc/mlflow", "readOnly": True}],
                 "startupProbe": {**health, "failureThreshold": 30},  # migrations on first start: about 50 s
                 "readinessProbe": health, "livenessProbe": {**health, "failureThreshold": 6}}
    wait = {"name": "wait-for-postgres", "image": POSTGRES_IMAGE,
            "command": ["sh", "-c", f"until pg_isready -h postgres.{cluster.namespace} -p {POSTGRES_PORT} "
                                    f"-U {POSTGRES_USER} -d mlflow; do sleep 2; done"]}
    labels = {"app.kubernetes.io/name": "mlflow"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("mlflow", cluster, "mlflow"),
                  "spec": {"replicas": 1, "strategy": {"type": "Recreate"},  # one writer of its volume
                           "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": {**labels, **PART_OF}},
                                        "spec": {"securityContext": RUN_AS, "initContainers": [wait],
                                                 "containers": [container],
                                                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": MLFLOW_CLAIM}},
                                                             {"name": "auth", "configMap": {"name": "mlflow-auth"}}]}}}}
    auth = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("mlflow-auth", cluster, "mlflow"),
            "data": {"basic_auth.ini": AUTH_INI.read_text()}}
    return [auth, claim(MLFLOW_CLAIM, cluster, "50Gi", "ReadWriteOnce"), deployment, service("mlflow", MLFLOW_PORT, cluster)]


def postgres_docs(cluster: Cluster) -> list[dict[str, Any]]:
    """docker-compose.yml's `postgres` service: PostgreSQL 15, databases `mlflow` (POSTGRES_DB) and
    `optuna` (the init script), its data on a claim of its own that outlives the pod."""
    env = (plain_env({"POSTGRES_USER": POSTGRES_USER, "POSTGRES_DB": "mlflow"})
           + [secret_env("POSTGRES_PASSWORD", "postgres-password")]
           # a fresh volume's root holds lost+found, which initdb refuses: the data goes one folder down
           + plain_env({"PGDATA": "/var/lib/postgresql/data/pgdata"}))
    ready = {"exec": {"command": ["sh", "-c", 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d optuna']},
             "periodSeconds": 5, "timeoutSeconds": 5}
    container = {"name": "postgres", "image": POSTGRES_IMAGE, "env": env,
                 "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
                 "resources": quantities(1, "2Gi"), "readinessProbe": ready,
                 "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                                  {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True}]}
    labels = {"app.kubernetes.io/name": "postgres"}
    template = {"metadata": {"labels": {**labels, **PART_OF}},
                "spec": {"containers": [container], "volumes": [{"name": "init", "configMap": {"name": "postgres-init"}}]}}
    data = {"metadata": {"name": "data", "labels": dict(PART_OF)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}
    stateful = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("postgres", cluster, "postgres"),
                "spec": {"serviceName": "postgres", "replicas": 1, "selector": {"matchLabels": labels},
                         "template": template, "volumeClaimTemplates": [data]}}
    init = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("postgres-init", cluster, "postgres"),
            "data": {POSTGRES_INIT.name: POSTGRES_INIT.read_text()}}
    return [init, stateful, service("postgres", POSTGRES_PORT, cluster)]


# --- what the user runs --------------------------------------------------------------------------

def secret_command(namespace: str) -> str:
    """`kubectl create secret` with shell variables, never values, in it."""
    literals = " ".join(f'--from-literal={key}="${var}"' for key, var in SECRET_KEYS.items())
    return f"kubectl create secret generic {SECRET} --namespace {namespace} {literals}"


def header(file: str, job: str, cluster: Cluster) -> str:
    ns = cluster.namespace
    lines = [f"{file}: written by `python -m study kuberay` (study/kuberay.py) for the RayJob {job!r} in namespace {ns!r}.",
             "Needs the KubeRay operator (these manifests were validated against its v1.7.0 RayJob schema; no",
             "cluster has run them) and the Secret, made once per namespace with the variables of",
             "docker-compose.yml's .env set in the shell (values never go into these files):",
             f"  {secret_command(ns)}",
             "Then apply this folder, all four files (in any order: pods wait for what they mount):",
             "  kubectl apply -f <this folder>",
             f"Watch: kubectl get rayjob {job} -n {ns} -w; logs: kubectl logs -n {ns} -f job/{job}",
             f"MLflow UI: kubectl port-forward -n {ns} svc/mlflow 5000:5000, then http://127.0.0.1:5000 (user admin)",
             f"Resume after a failure: kubectl delete rayjob {job} -n {ns}; kubectl apply -f rayjob.yaml",
             "(the driver resumes the study when its record is on the shared volume)."]
    return "".join(f"# {line}\n" for line in lines)


def write(out: Path, files: dict[str, str]) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            write_atomic(out / name, text)
    except OSError as err:
        raise StudyError(f"cannot write the manifests into {out}: {err}") from None


def print_next_steps(out: Path, spec: StudySpec, cluster: Cluster) -> None:
    job, ns = resource_name(spec.name), cluster.namespace
    per_worker = (f"{math.floor(cluster.gpus_per_worker / spec.gpus + 1e-9)} trials" if spec.gpus
                  else f"{math.floor(cluster.cpus_per_worker / spec.cpus + 1e-9)} trials")
    print(f"[kuberay] wrote {', '.join(FILES)} into {out}")
    print(f"[kuberay] {cluster.workers} worker(s) of {cluster.cpus_per_worker} CPUs, {cluster.gpus_per_worker} GPUs, "
          f"{cluster.memory_per_worker}: {per_worker} each at once (a trial: {spec.cpus:g} CPUs, {spec.gpus:g} GPUs)")
    print("next:")
    print(f"  docker build -f docker/Dockerfile -t {cluster.image} . && docker push {cluster.image}")
    if ns != "default":
        print(f"  kubectl create namespace {ns}")
    print(f"  {secret_command(ns)}   # the variables as in docker-compose.yml's .env")
    print(f"  kubectl apply -f {out}")
    print(f"watch: kubectl get rayjob {job} -n {ns} -w   (logs: kubectl logs -n {ns} -f job/{job})")
    print(f"MLflow UI: kubectl port-forward -n {ns} svc/mlflow 5000:5000, then http://127.0.0.1:5000")


def apply(out: Path, debug: bool) -> int:
    """`kubectl apply -f OUT`: missing kubectl is refused (2); kubectl's own failure, an unreachable
    cluster among them, comes back as its last error line (3). The manifests stay written."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return one_line(StudyError(f"--apply needs kubectl on PATH; the manifests are in {out}"), 2, debug)
    done = subprocess.run([kubectl, "apply", "-f", str(out)], capture_output=True, text=True, check=False)
    print(done.stdout, end="")
    if done.returncode == 0:
        return 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")] or lines or [f"exit code {done.returncode}"]
    return one_line(StudyError(f"kubectl apply -f {out} failed: {errors[-1]}"), 3, debug)

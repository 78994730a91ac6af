"""`python -m study kuberay`: the manifests it writes, checked without a cluster.

No Kubernetes cluster runs here, so nothing is applied for real. What is checked instead:
- every RayJob against the KubeRay v1.7.0 RayJob CRD's own OpenAPI schema (vendored unchanged under
  tests/schemas/kuberay/, with its NOTICE), read strictly as `kubectl apply` does by default: an
  unknown field is an error, not silently pruned as the API server would; plus the rules KubeRay's
  operator adds in Go (ray-operator/controllers/ray/utils/validation.go: a DNS-1035 name of at most
  47 characters, worker groups with min/max replicas when autoscaling is off);
- the RayJob's pod templates and every core resource (Deployment, StatefulSet, Service,
  PersistentVolumeClaim, ConfigMap) against Kubernetes' own schemas, strictly, through the
  `kubernetes-validate` package, for the oldest and the newest Kubernetes it ships that we target;
- that no secret value reaches a file or the console, and every secret is a secretKeyRef to the
  one Secret the printed `kubectl create secret` command makes;
- the RayJob's entrypoint: parsed with shlex and the project's own argparse, and run through the
  same two shells as in the cluster (KubeRay's submitter `bash -c` line, then Ray's shlex.join and
  `shell=True`), where only `python` is a stand-in (the real study needs the cluster);
- bad input: one line, exit 2, nothing written; --apply: kubectl's own failure in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from study import __main__ as study_cli
from study import kuberay
from study.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).parent / "schemas" / "kuberay"
CRD_FILE = SCHEMAS / "ray.io_rayjobs.yaml"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # kubernetes-validate's schemas: an older cluster and its newest
SECRET_VARS = ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY",
               "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD")
ODD_PATH = "/app/data/my cifar's \"copy\" $HOME;`x`"  # spaces, both quotes and shell syntax in one --set

# Each case: the arguments after `kuberay`, and a spec file to write first (or None).
CASES = {
    "cpu-only": (["smoke", "--name", "smoke-k8s"], None),
    "gpu-defaults-namespace": (["hpo", "--name", "hpo_1", "--workers", "3", "--namespace", "research"], None),
    "gpus-per-worker-set-quoted": (["paper-amount", "--name", "Amount.30", "--workers", "2", "--gpus-per-worker", "4",
                                    "--set", "epochs=30", "--set", f"data_root={ODD_PATH}"], None),
    "spec-file-image-cpus": (["my-study.yaml", "--name", "mine", "--image", "registry.example.org/lab/mollify-lab:0.1.0",
                              "--cpus-per-worker", "16", "--memory-per-worker", "96Gi", "--gpus-per-trial", "0.5",
                              "--max-concurrent", "4", "--num-samples", "12", "--namespace", "ml-team"],
                             "name: mine\ntrial: {dataset: synthetic, epochs: 2, valid_per_class: 10}\n"
                             "search:\n  algorithm: tpe\n  objectives: [[valid/error, min]]\n  num_samples: 6\n"
                             "  space: {beta: {type: float, low: 1.0, high: 9.0}}\n"
                             "resources: {cpus: 2, gpus: 0.25}\n"),
}


# --- the RayJob CRD's schema, read strictly ----------------------------------------------------------

def crd_schema() -> dict:
    crd = yaml.load(CRD_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def structural(node):
    """The CRD's schema as `kubectl apply` enforces it: an object's unknown fields are errors unless
    it says x-kubernetes-preserve-unknown-fields; an embedded resource also takes apiVersion, kind
    and metadata; int-or-string is either; nullable admits null."""
    if isinstance(node, list):
        return [structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural(v) for k, v in node.items()}
    if out.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {}).update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                  "metadata": {"type": "object"}})
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def list_type(validator, kind, instance, schema):
    """x-kubernetes-list-type: a `map` list's items are unique by their keys, a `set`'s items unique."""
    if not isinstance(instance, list) or kind == "atomic":
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = [tuple(item.get(k) for k in keys) if kind == "map" else json.dumps(item, sort_keys=True) for item in instance]
    if len(seen) != len(set(seen)):
        yield jsonschema.ValidationError(f"x-kubernetes-list-type {kind}: duplicate items {instance}")


def cel_rules(validator, rules, instance, schema):
    """CEL rules (x-kubernetes-validations) cannot be evaluated here: a manifest must not set a field
    that carries them, so that nothing it holds escapes the check."""
    yield jsonschema.ValidationError(f"sets a field with CEL rules that cannot be checked here: {rules}")


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": list_type, "x-kubernetes-validations": cel_rules})


@pytest.fixture(scope="module")
def rayjob_schema() -> jsonschema.protocols.Validator:
    return CRDValidator(structural(crd_schema()))


def crd_errors(validator, doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def operator_errors(doc: dict) -> list[str]:
    """What KubeRay 1.7's operator checks in Go before it creates anything (utils/validation.go)."""
    errors = []
    name = doc["metadata"]["name"]
    if len(name) > 47 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"RayJob name {name!r} is not a DNS-1035 label of at most 47 characters")
    cluster = doc["spec"]["rayClusterSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not cluster.get("enableInTreeAutoscaling") and (low is None or high is None):
            errors.append(f"worker group {group['groupName']} must set minReplicas and maxReplicas")
        elif not low <= group.get("replicas", low) <= high:
            errors.append(f"worker group {group['groupName']}: replicas outside [minReplicas, maxReplicas]")
        if group.get("resources") and set(group.get("rayStartParams", {})) & {"num-cpus", "num-gpus", "memory", "resources"}:
            errors.append("resources set both in rayStartParams and in the group's resources")
    return errors


def core_errors(doc: dict) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{doc['kind']} {doc['metadata'].get('name')} (Kubernetes {version}): "
                          f"{'/'.join(map(str, err.path))}: {err.message[:200]}")
    return errors


def pod_templates(rayjob: dict) -> list[dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]


def as_pod_template(template: dict, name: str) -> dict:
    """A RayJob's pod template as a core PodTemplate, so Kubernetes' schema checks it too."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


# --- generating the manifests ----------------------------------------------------------------------

def run_kuberay(argv: list[str], runs: Path, capsys) -> tuple[int, str, str]:
    code = study_cli.main(["--runs-dir", str(runs), "kuberay", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def secret_values() -> dict[str, str]:
    return {var: secrets.token_urlsafe(24) for var in SECRET_VARS}


@pytest.fixture(scope="module")
def generated(tmp_path_factory, secret_values) -> dict[str, dict]:
    """Every case, written once with random secrets in the environment (as a user would have them)."""
    root = tmp_path_factory.mktemp("kuberay")
    cases = {}
    with pytest.MonkeyPatch.context() as mp:
        for var, value in secret_values.items():
            mp.setenv(var, value)
        mp.chdir(root)
        for case, (argv, spec_text) in CASES.items():
            if spec_text:
                (root / argv[0]).write_text(spec_text)
            runs = root / case / "runs"
            stdout = _capture(lambda: study_cli.main(["--runs-dir", str(runs), "kuberay", *argv]))
            name = argv[argv.index("--name") + 1]
            cases[case] = {"argv": argv, "out": runs / name / "kuberay", "stdout": stdout, "runs": runs,
                           "docs": load_docs(runs / name / "kuberay")}
    return cases


def _capture(call) -> str:
    """stdout of an in-process command that must succeed (capsys is function-scoped)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = call()
    assert code == 0, buffer.getvalue()
    return buffer.getvalue()


def load_docs(folder: Path) -> dict[str, list[dict]]:
    return {f.name: [d for d in yaml.safe_load_all(f.read_text()) if d] for f in sorted(folder.glob("*.yaml"))}


def the(docs: dict[str, list[dict]], kind: str) -> list[dict]:
    return [d for file_docs in docs.values() for d in file_docs if d["kind"] == kind]


def effective_spec(case: str, root: Path):
    """The spec as the driver will run it: the project's own parser, with the case's changes."""
    argv = CASES[case][0]
    args = study_cli.parse_args(["kuberay", *argv])
    if CASES[case][1]:
        args.preset = str(root / argv[0])
    return study_cli.spec_from_args(args)


# --- the tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_every_manifest_validates_against_kuberay_and_kubernetes_schemas(case, generated, rayjob_schema):
    docs = generated[case]["docs"]
    assert sorted(docs) == sorted(kuberay.FILES)
    errors = []
    for doc in (d for file_docs in docs.values() for d in file_docs):
        if doc["kind"] == "RayJob":
            errors += crd_errors(rayjob_schema, doc) + operator_errors(doc)
            errors += [e for i, t in enumerate(pod_templates(doc)) for e in core_errors(as_pod_template(t, f"pod-{i}"))]
        else:
            errors += core_errors(doc)
    assert not errors, "\n".join(errors)
    kinds = {d["kind"] for file_docs in docs.values() for d in file_docs}
    assert {"RayJob", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim", "ConfigMap"} <= kinds


def test_the_validators_catch_mistakes(generated, rayjob_schema):
    """Each check above can fail: a mistake of each kind is caught."""
    good = the(generated["gpu-defaults-namespace"]["docs"], "RayJob")[0]
    assert not crd_errors(rayjob_schema, good)

    def broken(change) -> dict:
        doc = json.loads(json.dumps(good))
        change(doc)
        return doc

    group = lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    head = lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    for change in (lambda d: group(d).update(replica=2),  # a misspelt field
                   lambda d: group(d).update(replicas="two"),
                   lambda d: d["spec"].update(backoffLimit="2"),  # a string for an int32
                   lambda d: head(d)["env"].append(dict(head(d)["env"][0])),  # a duplicate env name (list-map)
                   lambda d: head(d)["resources"]["limits"].update(cpu="two cores"),  # not a quantity
                   lambda d: d["spec"].update(deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}})):  # CEL
        assert crd_errors(rayjob_schema, broken(change)), change
    assert operator_errors(broken(lambda d: d["metadata"].update(name="x" * 48)))
    assert operator_errors(broken(lambda d: group(d).pop("maxReplicas")))
    service = the(generated["cpu-only"]["docs"], "Service")[0]
    assert core_errors({**service, "spec": {**service["spec"], "port": 5000}})
    assert core_errors(as_pod_template({**pod_templates(good)[0], "sepc": {}}, "p"))


def test_the_vendored_crd_is_the_release_its_notice_names():
    notice = (SCHEMAS / "NOTICE").read_text()
    digest = hashlib.sha256(CRD_FILE.read_bytes()).hexdigest()
    assert f"SHA-256:  {digest}" in notice
    assert "v1.7.0" in notice and "Apache License 2.0" in notice and (SCHEMAS / "LICENSE").is_file()
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text()[:200]


@pytest.mark.parametrize("case", list(CASES))
def test_no_secret_value_is_written_and_every_secret_is_a_reference(case, generated, secret_values):
    """Random secrets were in the environment: none may appear in a file or on the console. Every
    secret-looking variable is a secretKeyRef to the one Secret, under a key that the printed
    `kubectl create secret` command fills (from shell variables, never values)."""
    files = {p: p.read_text() for p in generated[case]["out"].iterdir()}
    for value in secret_values.values():
        assert all(value not in text for text in files.values())
        assert value not in generated[case]["stdout"]
    command = next(line for line in generated[case]["stdout"].splitlines() if "kubectl create secret" in line)
    made = dict(re.findall(r'--from-literal=([-\w]+)="\$(\w+)"', command))
    assert made == kuberay.SECRET_KEYS and "=" not in re.sub(r'--from-literal=[-\w]+="\$\w+"', "", command)
    refs = []
    for doc in (d for docs in generated[case]["docs"].values() for d in docs):
        for env in walk_env(doc):
            if re.search(r"PASSWORD|TOKEN|SECRET", env["name"]):
                assert "value" not in env, f"{doc['kind']}: {env['name']} is given inline"
                refs.append(env["valueFrom"]["secretKeyRef"])
    assert refs and all(r["name"] == kuberay.SECRET and r["key"] in made for r in refs)
    rayjob = the(generated[case]["docs"], "RayJob")[0]
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": kuberay.SECRET}
    assert "auth_token" in made  # the key KubeRay reads the token from (authOptions.secretName)


def walk_env(node):
    """Every env entry of every container in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from walk_env(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_env(item)


def driver_lines(rayjob: dict) -> tuple[list[str], list[str]]:
    """The launch and resume commands in the entrypoint, as the driver's shell splits them."""
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["sh", "-c"] and len(words) == 3
    lines = words[2].splitlines()
    guard = next(line for line in lines if line.startswith("if [ -e "))
    resume = shlex.split(guard.split("; then exec ", 1)[1].rsplit("; fi", 1)[0])
    launch = shlex.split(next(line for line in lines if line.startswith("exec python")).removeprefix("exec "))
    return launch, resume


@pytest.mark.parametrize("case", list(CASES))
def test_the_entrypoint_is_a_launch_the_project_parses(case, generated):
    argv = CASES[case][0]
    name = argv[argv.index("--name") + 1]
    ns = argv[argv.index("--namespace") + 1] if "--namespace" in argv else "default"
    launch, resume = driver_lines(the(generated[case]["docs"], "RayJob")[0])
    assert launch[:3] == ["python", "-m", "study"] and resume[:3] == ["python", "-m", "study"]
    args = study_cli.parse_args(launch[3:])
    assert (args.command, args.name, args.address) == ("launch", name, "auto")
    assert args.tracking_uri == f"http://mlflow.{ns}:5000"
    assert args.storage == f"postgresql://mollify@postgres.{ns}:5432/optuna"
    assert str(args.runs_dir) == kuberay.RUNS_DIR
    assert args.overrides == [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    for flag in ("--num-samples", "--gpus-per-trial", "--max-concurrent"):
        if flag in argv:
            assert str(getattr(args, flag[2:].replace("-", "_"))) == argv[argv.index(flag) + 1]
    spec_file = CASES[case][1]
    assert args.preset == (f"{kuberay.SPEC_DIR}/{argv[0]}" if spec_file else argv[0])
    back = study_cli.parse_args(resume[3:])
    assert (back.command, back.name, str(back.runs_dir)) == ("resume", name, kuberay.RUNS_DIR)
    if spec_file:  # the head mounts the file at the path the driver is given, with the file's text
        configmap = the(generated[case]["docs"], "ConfigMap")
        assert any(cm["data"].get(argv[0]) == spec_file for cm in configmap)


def test_the_entrypoint_survives_kuberays_and_rays_shells_and_resumes(tmp_path):
    """The entrypoint goes through the submitter's `bash -ce '... -- ENTRYPOINT ; fi'` line, then
    Ray's `ray job submit` joins the words it got (shlex.join) and runs them with `shell=True`.
    Both shells are real here; `python` is a stand-in that records its arguments (a real study
    needs the cluster). Without a record the driver launches; with one it resumes."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    stub = bin_dir / "python"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    stub.chmod(0o755)
    join = tmp_path / "ray_job_submit.py"  # what `ray job submit -- WORDS` makes of the words (Ray 2.60's cli.py)
    join.write_text("import shlex, sys\nprint(shlex.join(sys.argv[1:]))\n")
    args = study_cli.parse_args(["kuberay", "smoke", "--name", "odd", "--set", f"data_root={ODD_PATH}"])
    cluster = kuberay.Cluster("default", "img", 1, 0, 1, "8Gi")
    runs = tmp_path / "shared runs"
    script = kuberay.driver_script(kuberay.launch_argv("smoke", args, cluster, str(runs)), "odd",
                                   workdir=str(tmp_path), runs_dir=str(runs))
    entry = kuberay.entrypoint(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def submit() -> list[str]:
        joined = subprocess.run(["bash", "-ce", f"{sys.executable} {join} {entry} ; true"],
                                capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(joined, shell=True, env=env, check=True)
        return json.loads(calls.read_text().splitlines()[-1])

    launched = submit()
    assert launched[:2] == ["-m", "study"]
    parsed = study_cli.parse_args(launched[2:])
    assert (parsed.command, parsed.overrides, parsed.runs_dir) == ("launch", [f"data_root={ODD_PATH}"], runs)
    (runs / "odd").mkdir(parents=True)
    (runs / "odd" / "study.json").write_text("{}")
    resumed = study_cli.parse_args(submit()[2:])
    assert (resumed.command, resumed.name, resumed.runs_dir) == ("resume", "odd", runs)


@pytest.mark.parametrize("case", list(CASES))
def test_worker_resources_hold_the_specs_trials(case, generated):
    """The worker pods ask Kubernetes for what Ray is told they have, hold at least one trial of
    the spec as it will run (the command line's changes folded in), and follow the options."""
    argv = CASES[case][0]
    root = generated[case]["runs"].parent.parent
    spec = effective_spec(case, root)
    rayjob = the(generated[case]["docs"], "RayJob")[0]
    cluster = rayjob["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert group["template"]["spec"]["containers"][0]["resources"]["requests"] == limits
    cpus, gpus = int(limits["cpu"]), int(limits.get("nvidia.com/gpu", 0))
    assert group["rayStartParams"] == {"num-cpus": str(cpus), "num-gpus": str(gpus)}
    assert cpus >= spec.cpus and gpus >= spec.gpus
    option = lambda flag, default: int(argv[argv.index(flag) + 1]) if flag in argv else default
    assert gpus == option("--gpus-per-worker", math.ceil(spec.gpus))
    trials = math.floor(gpus / spec.gpus + 1e-9) if spec.gpus else 1
    assert trials >= 1 and cpus == option("--cpus-per-worker", max(1, math.ceil(trials * spec.cpus)))
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == option("--workers", 1)
    assert group["groupName"] == ("gpu-workers" if gpus else "cpu-workers")
    if "--memory-per-worker" in argv:
        assert limits["memory"] == argv[argv.index("--memory-per-worker") + 1]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    assert rayjob["metadata"]["annotations"]["mollify-lab/trial-resources"] == f"cpus={spec.cpus:g} gpus={spec.gpus:g}"
    image = argv[argv.index("--image") + 1] if "--image" in argv else "mollify-lab:0.1.0"
    for template in pod_templates(rayjob):
        assert template["spec"]["containers"][0]["image"] == image


def test_the_manifests_mirror_docker_compose():
    """Images, users, MLflow's command and auth config, the Ray nodes' variables: as the compose file has them."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == kuberay.POSTGRES_IMAGE
    assert "${POSTGRES_USER:-" + kuberay.POSTGRES_USER + "}" in services["postgres"]["environment"]["POSTGRES_USER"]
    assert f"admin_username = {kuberay.MLFLOW_USER}" in kuberay.AUTH_INI.read_text()
    assert re.search(rf"^WORKDIR {kuberay.WORKDIR}$", (REPO / "docker" / "Dockerfile").read_text(), re.M)
    args = study_cli.parse_args(["kuberay", "smoke", "--name", "s"])
    cluster = kuberay.plan_cluster(load_spec("smoke", name="s"), args)
    assert cluster.image == services["ray-head"]["image"] == services["mlflow"]["image"]
    deployment = next(d for d in kuberay.mlflow_docs(cluster) if d["kind"] == "Deployment")
    ours = deployment["spec"]["template"]["spec"]["containers"][0]
    theirs = [str(a) for a in services["mlflow"]["command"]]
    strip = lambda argv: [a for i, a in enumerate(argv) if not (i and argv[i - 1] in ("--backend-store-uri", "--allowed-hosts"))]
    assert strip(ours["command"]) == strip(theirs)
    assert {e["name"] for e in ours["env"]} == set(services["mlflow"]["environment"])
    assert set(services["mlflow"]["command"][services["mlflow"]["command"].index("--allowed-hosts") + 1].split(",")) \
        <= set(ours["command"][ours["command"].index("--allowed-hosts") + 1].split(","))
    ray_vars = {e["name"] for e in kuberay.ray_env(cluster)}
    assert ray_vars == set(compose["x-ray-env"])


BAD = {
    "unknown preset": ["no-such-preset", "--name", "x"],
    "unknown --set key": ["smoke", "--name", "x", "--set", "no_such_key=1"],
    "GPU trials on CPU workers": ["hpo", "--name", "x", "--gpus-per-worker", "0"],
    "trial needs more CPUs": ["paper-amount", "--name", "x", "--cpus-per-worker", "2"],
    "no workers": ["smoke", "--name", "x", "--workers", "0"],
    "bad namespace": ["smoke", "--name", "x", "--namespace", "Team_A"],
    "name no RayJob takes": ["smoke", "--name", "9lives"],
    "name no study takes": ["smoke", "--name", "../up"],
    "memory not a quantity": ["smoke", "--name", "x", "--memory-per-worker", "lots"],
}


@pytest.mark.parametrize("argv", list(BAD.values()), ids=list(BAD))
def test_bad_input_is_refused_in_one_line_and_writes_nothing(argv, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_kuberay([*argv, "--out", str(tmp_path / "out")], runs, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not runs.exists() and not (tmp_path / "out").exists()


def test_apply_without_kubectl_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out, err = run_kuberay(["smoke", "--name", "s", "--apply"], tmp_path / "runs", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "kubectl" in err
    assert (tmp_path / "runs" / "s" / "kuberay" / "rayjob.yaml").is_file()  # written; only the apply failed


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_apply_without_a_reachable_cluster_fails_in_one_line_naming_kubectls_error(tmp_path, capsys, monkeypatch):
    """`kubectl apply --dry-run=client` needs a server too (for the resource types), so there is no
    offline apply to test: a kubeconfig points at a closed port on loopback and kubectl's own error
    must come back in one line."""
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "closed",
        "clusters": [{"name": "closed", "cluster": {"server": "http://127.0.0.1:9"}}],
        "contexts": [{"name": "closed", "context": {"cluster": "closed", "user": "nobody"}}],
        "users": [{"name": "nobody", "user": {}}]}))
    monkeypatch.setenv("KUBECONFIG", str(config))
    code, out, err = run_kuberay(["smoke", "--name", "s", "--apply"], tmp_path / "runs", capsys)
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "kubectl apply" in err and "127.0.0.1:9" in err, err

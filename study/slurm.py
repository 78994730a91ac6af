"""`python -m study slurm PRESET|SPEC.yaml --name NAME --nodes N ...`: a study as one Slurm job.

    python -m study slurm smoke --name s1 --nodes 1 --dry-run          # write and show the script only
    python -m study slurm hpo --name h1 --nodes 4 --gpus-per-node 4 --partition gpu --time 12:00:00 \\
        --tracking-uri http://mlflow.lab:5000 --storage postgresql://mollify@db.lab/optuna

Checks what `launch` checks that needs no Ray (the spec, the name, the stores), writes
`<runs dir>/<name>/slurm.sbatch` from study/templates/slurm.sbatch, submits it with `sbatch
--parsable` and records the job in `<runs dir>/<name>/slurm.json`. The job (see the template)
starts a Ray cluster of its own on its nodes, runs the study's driver against it, stops it as an
interruption on Slurm's warning signal, and resumes it when requeued. `study status NAME` shows the
job's state beside the study's (`job_state`).

Exit codes: 0 submitted (or written, --dry-run), 2 refused (the spec, the name, or Slurm's own
error such as an unknown partition, in one line), 3 no `sbatch` on this machine (the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from contract import one_line, write_atomic
from study.guards import StudyError, check_name
from study.record import RECORD_FILE, study_dir
from study.settings import passed_through
from study.spec import StudySpec, preset_names
from study.stores import Stores, resolve_stores

TEMPLATE = Path(__file__).parent / "templates" / "slurm.sbatch"
SCRIPT_FILE, JOB_FILE = "slurm.sbatch", "slurm.json"
DEFAULT_GRACE = 120  # seconds: the driver stops Tune, writes its checkpoints and closes its runs
EXIT_SUBMITTED, EXIT_REFUSED, EXIT_NO_SLURM = 0, 2, 3
SLURM_TIMEOUT = 30  # seconds for one Slurm command: slurmctld answers in well under a second


class SlurmError(StudyError):
    """Slurm refused or could not be asked: one line for the user."""


class NoSlurmError(SlurmError):
    """No Slurm client on this machine (exit 3: the environment, not the command)."""


@dataclass(frozen=True)
class Job:
    """What the job asks Slurm for; None: the cluster's default."""

    nodes: int
    gpus_per_node: int | None = None
    cpus_per_node: int | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    sbatch_args: tuple[str, ...] = ()
    grace: int = DEFAULT_GRACE


# --- the command line ------------------------------------------------------------------------------

def add_parser(commands: Any) -> None:
    p = commands.add_parser("slurm", help="run a study as a Slurm job on a Ray cluster of its own",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help=f"a preset ({', '.join(preset_names())}) or a spec file")
    p.add_argument("--name", help="study name (default: the spec's)")
    p.add_argument("--nodes", type=int, required=True, help="nodes: Ray's head (and the driver) on the first")
    p.add_argument("--gpus-per-node", type=int)
    p.add_argument("--cpus-per-node", type=int, help="CPUs on each node for Ray (sbatch --cpus-per-task)")
    p.add_argument("--partition")
    p.add_argument("--time", help="the job's time limit, HH:MM:SS (or any form sbatch --time takes)")
    p.add_argument("--account")
    p.add_argument("--sbatch-arg", dest="sbatch_args", action="append", default=[], metavar="ARG",
                   help="one more sbatch option, e.g. --sbatch-arg=--qos=long; repeatable")
    p.add_argument("--grace", type=int, default=DEFAULT_GRACE,
                   help=f"seconds before the time limit that Slurm signals the job to stop (default {DEFAULT_GRACE})")
    p.add_argument("--serve-mlflow", choices=("auto", "yes", "no"), default="auto",
                   help="serve a SQLite tracking store from the head node for the trials (auto: when --nodes > 1)")
    p.add_argument("--dry-run", action="store_true", help="write and print the script; submit nothing")
    p.add_argument("--tracking-uri", help="MLflow, as for launch; across nodes an MLflow server or a SQLite "
                   "file the job serves")
    p.add_argument("--storage", help="Optuna storage, as for launch (stays with the driver on the first node)")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-figures", action="store_true")


def run(args: argparse.Namespace, spec_from_args: Callable[[argparse.Namespace], StudySpec]) -> int:
    """Check, write, submit; Slurm's refusals in one line (2), no `sbatch` (3)."""
    spec = spec_from_args(args)  # parsed and checked as launch does; its errors are the caller's (2)
    try:
        return submit_study(args, spec)
    except NoSlurmError as err:
        return one_line(err, EXIT_NO_SLURM, args.debug)
    except StudyError as err:
        return one_line(err, EXIT_REFUSED, args.debug)


def submit_study(args: argparse.Namespace, spec: StudySpec) -> int:
    check_name(spec.name)
    job = job_from_args(args)
    stores = resolve_stores(args.tracking_uri, args.storage)  # absolute; a password into the environment only
    folder = study_dir(args.runs_dir, spec.name)
    check_free(folder, spec.name)
    serve = serves_mlflow(args.serve_mlflow, job.nodes, stores.tracking_uri)
    script = render(job, spec.name, args.runs_dir.resolve(), launch_args(args, spec.name, stores), serve,
                    stores.tracking_uri)
    sbatch = None if args.dry_run else sbatch_path()  # no sbatch: refused before anything is written
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SCRIPT_FILE, script)
    if args.dry_run:
        print(script, end="")
        print(f"[slurm] wrote {folder / SCRIPT_FILE} (--dry-run: nothing submitted; `sbatch` it to run)")
        return EXIT_SUBMITTED
    job_id = submit_claimed(sbatch, folder, made)
    announce(job_id, spec.name, folder, args.runs_dir)
    return EXIT_SUBMITTED


def job_from_args(args: argparse.Namespace) -> Job:
    if args.nodes < 1:
        raise StudyError(f"--nodes {args.nodes}: at least 1")
    for flag, value in (("--gpus-per-node", args.gpus_per_node), ("--cpus-per-node", args.cpus_per_node)):
        if value is not None and value < (0 if flag == "--gpus-per-node" else 1):
            raise StudyError(f"{flag} {value}: too few")
    if args.grace < 10:
        raise StudyError(f"--grace {args.grace}: the driver needs at least 10 seconds to stop a study")
    return Job(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=args.cpus_per_node,
               partition=args.partition, time=args.time, account=args.account,
               sbatch_args=tuple(args.sbatch_args), grace=args.grace)


def check_free(folder: Path, name: str) -> None:
    """A study of this name is refused: recorded (`resume` continues it), or submitted already."""
    if (folder / RECORD_FILE).exists():
        raise StudyError(f"study {name!r} exists in {folder}: `python -m study resume {name}` continues it, "
                         "or choose another --name")
    if (folder / JOB_FILE).exists():
        job = read_job(folder).get("job_id", "?")
        raise StudyError(f"study {name!r} was submitted already as Slurm job {job} ({folder / JOB_FILE}); "
                         "`scancel` it and remove the folder, or choose another --name")


def serves_mlflow(choice: str, nodes: int, tracking_uri: str) -> bool:
    """Trials on several nodes cannot share a SQLite file: the job serves it from its head node.
    `yes` forces it on one node too; a server's URI needs nothing."""
    sqlite = tracking_uri.startswith("sqlite:///")
    if choice == "yes" and not sqlite:
        raise StudyError(f"--serve-mlflow yes serves a SQLite store; the tracking store is {tracking_uri}")
    return sqlite and (choice == "yes" or choice == "auto" and nodes > 1)


def launch_args(args: argparse.Namespace, name: str, stores: Stores) -> list[str]:
    """`python -m study launch` arguments for the job: the stores as resolved here (absolute, no
    password), a spec file's absolute path, everything else as given. No --address: the job sets
    $RAY_ADDRESS, which a requeued job's `resume` reads too (the address changes per job)."""
    source = args.preset if Path(args.preset).suffix not in (".yaml", ".yml") else str(Path(args.preset).resolve())
    out = [source, "--name", name, "--tracking-uri", stores.tracking_uri, "--storage", stores.optuna_storage]
    return out + passed_through(args) + (["--no-figures"] if args.no_figures else [])


# --- the script ----------------------------------------------------------------------------------

def sbatch_lines(job: Job, name: str, folder: Path) -> list[str]:
    """The #SBATCH lines the command line decides."""
    opts = [f"--job-name=mollify-{name}", f"--nodes={job.nodes}", f"--output={folder}/slurm-%j.out",
            f"--error={folder}/slurm-%j.err", f"--signal=B:TERM@{job.grace}"]
    opts += [f"--{flag}={value}" for flag, value in (
        ("cpus-per-task", job.cpus_per_node), ("gpus-per-node", job.gpus_per_node), ("partition", job.partition),
        ("time", job.time), ("account", job.account)) if value is not None]
    return [f"#SBATCH {o}" for o in [*opts, *job.sbatch_args]]


def render(job: Job, name: str, runs_dir: Path, launch: list[str], serve: bool, tracking_uri: str) -> str:
    """The template with this study's values, every one quoted for bash."""
    values = {"SBATCH": "\n".join(sbatch_lines(job, name, runs_dir / name)), "STUDY_NAME": shlex.quote(name),
              "RUNS_DIR": shlex.quote(str(runs_dir)), "PYTHON": shlex.quote(sys.executable),
              "LAUNCH": " ".join(shlex.quote(a) for a in launch),
              "RESUME": "--no-figures" if "--no-figures" in launch else "", "SERVE_MLFLOW": "1" if serve else "0",
              "MLFLOW_STORE": shlex.quote(tracking_uri if serve else ""), "GRACE": str(job.grace),
              "NODES": str(job.nodes)}
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


# --- submitting ------------------------------------------------------------------------------------

def sbatch_path() -> str:
    path = shutil.which("sbatch")
    if path is None:
        raise NoSlurmError("no `sbatch` on this machine: run `python -m study slurm` on a Slurm login node "
                           "(--dry-run writes the script without it)")
    return path


def submit_claimed(sbatch: str, folder: Path, made: bool) -> str:
    """Claim the name by its job file (one submission wins), submit, record the job id; a refusal
    removes what this call made."""
    claim = folder / JOB_FILE
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise StudyError(f"study {folder.name!r} is being submitted by another command now") from None
    os.close(fd)
    try:
        job_id = sbatch_submit(sbatch, folder / SCRIPT_FILE)
    except BaseException:
        claim.unlink(missing_ok=True)
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    write_atomic(claim, json.dumps({"job_id": job_id, "jobs": [job_id], "submitted": time.time(),
                                    "script": str(folder / SCRIPT_FILE)}, indent=2))
    return job_id


def sbatch_submit(sbatch: str, script: Path) -> str:
    """`sbatch --parsable`: the job id ("123" or "123;cluster"); Slurm's refusal as one line."""
    try:
        done = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True,
                              timeout=SLURM_TIMEOUT, cwd=script.parent)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"sbatch did not answer in {SLURM_TIMEOUT} s: is slurmctld reachable?") from None
    if done.returncode != 0:
        raise SlurmError(f"sbatch refused the job: {slurm_message(done.stderr)}")
    return done.stdout.strip().split(";")[0]


def slurm_message(stderr: str) -> str:
    """Slurm's error lines as one: `sbatch: error: ` prefixes dropped, distinct lines joined."""
    lines = []
    for line in stderr.strip().splitlines():
        text = line.split("error:", 1)[-1].strip() if "error:" in line else line.strip()
        if text and text not in lines:
            lines.append(text)
    return "; ".join(lines) or "no message"


def announce(job_id: str, name: str, folder: Path, runs_dir: Path) -> None:
    runs = "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"
    print(f"[slurm] submitted {name} as Slurm job {job_id} ({folder / SCRIPT_FILE})")
    print(f"[slurm] watch it: squeue -j {job_id}; tail -f {folder}/slurm-{job_id}.out {folder}/slurm-{job_id}.err; "
          f"python -m study{runs} status {name}")


# --- the job's state, for `study status` -------------------------------------------------------------

def read_job(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}


def job_state(runs_dir: Path, name: str) -> dict[str, Any] | None:
    """The study's Slurm job as Slurm sees it now ({job_id, state, reason, nodes, restarts}), or
    with a `note` where Slurm cannot say; None for a study not run through Slurm. Never raises:
    status must work where Slurm is unreachable."""
    job = read_job(study_dir(runs_dir, name))
    if "job_id" not in job:
        return None
    found = scontrol_job(job["job_id"]) or sacct_job(job["job_id"])
    if isinstance(found, str):
        return {"job_id": job["job_id"], "state": "unknown", "note": found}
    return {"job_id": job["job_id"], **found}


def slurm_command(argv: list[str]) -> tuple[int, str, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT)
    except FileNotFoundError:
        return 127, "", f"no `{argv[0]}` on this machine"
    except subprocess.TimeoutExpired:
        return 124, "", f"`{argv[0]}` did not answer in {SLURM_TIMEOUT} s"
    return done.returncode, done.stdout, done.stderr


def scontrol_job(job_id: str) -> dict[str, str] | str | None:
    """`scontrol show job -o`: slurmctld's memory (a job ended long ago is gone: None, ask sacct)."""
    rc, out, err = slurm_command(["scontrol", "show", "job", "-o", job_id])
    if rc != 0:
        return None if "Invalid job id" in err else f"Slurm cannot be asked: {slurm_message(err)}"
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return {"state": fields.get("JobState", "unknown"), "reason": fields.get("Reason", ""),
            "nodes": fields.get("NodeList", ""), "restarts": fields.get("Restarts", "0"),
            "run_time": fields.get("RunTime", "")}


def sacct_job(job_id: str) -> dict[str, str] | str:
    """The accounting database's word on a job slurmctld has forgotten, where there is one."""
    rc, out, err = slurm_command(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,NodeList,Elapsed"])
    rows = [r.split("|") for r in out.strip().splitlines() if r.count("|") == 2]
    if rc != 0 or not rows:
        why = slurm_message(err) if err.strip() else "no record of it"
        return f"Slurm no longer knows job {job_id} (ended; accounting: {why})"
    state, nodes, elapsed = rows[-1]
    return {"state": state.split()[0], "reason": "", "nodes": nodes, "restarts": "", "run_time": elapsed}


def status_line(job: dict[str, Any] | None) -> str | None:
    """`  Slurm job 12: RUNNING on n[1-2], restarted 1 time(s)` (or the note where Slurm cannot say)."""
    if job is None:
        return None
    if "note" in job:
        return f"  Slurm job {job['job_id']}: {job['note']}"
    where = f" on {job['nodes']}" if job.get("nodes") and job["nodes"] != "(null)" else ""
    reason = f" ({job['reason']})" if job.get("reason") not in ("", "None", None) else ""
    again = f", restarted {job['restarts']} time(s)" if job.get("restarts") not in ("", "0", None) else ""
    return f"  Slurm job {job['job_id']}: {job['state']}{reason}{where}{again}"


def submitted_only(runs_dir: Path, name: str) -> bool:
    """Submitted through Slurm, but the job's driver has not claimed the name yet (pending)."""
    folder = study_dir(runs_dir, name)
    return (folder / JOB_FILE).exists() and not (folder / RECORD_FILE).exists()


def print_submitted(runs_dir: Path, name: str, as_json: bool) -> int:
    """`study status` of a study whose job has not started its driver yet."""
    job = job_state(runs_dir, name)
    if as_json:
        print(json.dumps({"name": name, "state": "submitted", "slurm": job}, indent=2))
    else:
        print(f"{name}: submitted; the study starts when its Slurm job runs")
        print(status_line(job))
    return 0

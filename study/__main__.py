"""`python -m study launch|resume|status|list`: studies of supervised mollification.

    python -m study launch smoke
    python -m study launch quickstart --set dataset=tinyimagenet --set data_root=data/tiny-imagenet-200
    python -m study launch my-study.yaml --name try2 --address 127.0.0.1:6379 --gpus-per-trial 0.25
    python -m study resume try2
    python -m study status try2
    python -m study list
    python -m study estimate paper-baselines --gpus 8 --json
    python -m study slurm smoke --name s1 --nodes 2 --partition gpu --time 01:00:00
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from contract import debug_anywhere, one_line
from study import estimate_cli, estimate_record  # issue 21: `estimate`, the estimate in status
from study import kuberay  # issue 17: `kuberay`
from study import slurm  # issue 17: `slurm`, the job's state in status
from study.guards import StoreGoneError, unauthenticated, unauthenticated_error
from study.launch import LOG_FILE, Status, StudyError, launch, list_studies, read_record, resume, status, study_dir
from study.spec import SpecError, StudySpec, parse_spec, preset_names, read_source
from study.stores import resolve_environment
from trainables.config import ConfigError, parse_overrides


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="where study records and Ray's experiment folders live (default ./runs)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("launch", help="start a study from a preset or a YAML file")
    go.add_argument("preset", help=f"a preset ({', '.join(preset_names())}) or a spec file")
    go.add_argument("--name", help="study name (default: the spec's)")
    go.add_argument("--tracking-uri", help="MLflow (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db); "
                    "user:password@ in it moves to $MLFLOW_TRACKING_USERNAME/PASSWORD, never into a file")
    go.add_argument("--storage", help="Optuna storage URL (default: sqlite:///optuna.db); a PostgreSQL "
                    "password in it moves to $PGPASSWORD")
    go.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    go.add_argument("--num-samples", type=int, help="Optuna searches: number of trials")
    go.add_argument("--gpus-per-trial", type=float, help="fractional values share a GPU between trials")
    go.add_argument("--cpus-per-trial", type=float)
    go.add_argument("--max-concurrent", type=int, help="trials at once")
    go.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="fix a trial config key for every trial; repeatable")
    go.add_argument("--no-figures", action="store_true", help="skip the analysis figures at the end")
    go.add_argument("--verbose", action="store_true",
                    help="show what Ray, Optuna and MLflow print (default: into <runs dir>/<name>/study.log)")
    back = commands.add_parser("resume", help="finish a study whose driver stopped")
    back.add_argument("name")
    back.add_argument("--no-figures", action="store_true")
    back.add_argument("--verbose", action="store_true")
    show = commands.add_parser("status", help="trials done / running / failed, best so far")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    commands.add_parser("list", help="the studies under --runs-dir")
    estimate_cli.add_parser(commands)  # issue 21
    kuberay.add_parser(commands)  # issue 17
    slurm.add_parser(commands)  # issue 17
    debug_anywhere(commands)
    return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    """The spec with the command line's changes folded into its source, validated once."""
    raw, preset = read_source(args.preset)
    search, resources = dict(raw.get("search") or {}), dict(raw.get("resources") or {})
    if args.num_samples is not None:
        search["num_samples"] = args.num_samples
    if args.gpus_per_trial is not None:
        resources["gpus"] = args.gpus_per_trial
    if args.cpus_per_trial is not None:
        resources["cpus"] = args.cpus_per_trial
    raw = {**raw, "search": search, "resources": resources}
    if args.max_concurrent is not None:
        raw["max_concurrent"] = args.max_concurrent
    return parse_spec(raw, preset=preset, name=args.name, overrides=parse_overrides(args.overrides))


def make_figures(name: str, tracking_uri: str, runs_dir: Path, verbose: bool) -> None:
    """Regenerate the study's figures (the analysis package), attached to its parent run; what the
    analysis prints goes to the study's log unless `verbose`."""
    if importlib.util.find_spec("analysis.__main__") is None:
        return
    folder = study_dir(runs_dir, name)
    out = folder / "figures"
    cmd = [sys.executable, "-m", "analysis", "figures", "--experiment", name, "--tracking-uri", tracking_uri,
           "--out", str(out), "--log-to-mlflow"]
    with open(folder / LOG_FILE, "a") as log:
        sink = None if verbose else log
        done = subprocess.run(cmd, check=False, stdout=sink, stderr=sink).returncode == 0
    done = done and (out / "report.html").exists()
    if done:
        print(f"[study] figures: {out / 'report.html'} (also attached to the parent run under figures/)", flush=True)
    else:
        print(f"[study] the figures failed: see {folder / LOG_FILE}; rerun `python {' '.join(cmd[1:])}`", flush=True)


def print_status(info: Status, estimate: dict | None = None, job: dict | None = None) -> None:
    counts = [f"{info.finished}/{info.total} finished"] + [
        f"{getattr(info, k)} {k.replace('_', ' ')}"
        for k in ("stopped_early", "failed", "running", "interrupted", "never_started") if getattr(info, k)]
    print(f"{info.name} ({info.preset}, {info.algorithm}): {info.state}; {', '.join(counts)}")
    if info.best:
        b = info.best
        print(f"  best {b.metric} {b.value:.4f}: trial run '{b.run_name}' ({b.run_id})")
    print(f"  MLflow: {info.tracking_uri}" + (f"; runs: {info.runs_link}" if info.runs_link else ""))
    for note in info.notes:
        print(f"  note: {note}")
    line = estimate_record.status_line({"estimate": estimate})  # issue 21
    if line:
        print(line)
    line = slurm.status_line(job)  # issue 17
    if line:
        print(line)


# Exit codes, one per outcome (README.md, docs/reliability.md).
EXIT_FINISHED, EXIT_FAILED_TRIALS, EXIT_REFUSED, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
ENVIRONMENT_WORDS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "disk is full")


def environment_fault(err: BaseException) -> bool:
    """A failure of the machine rather than of the command or the code: a full disk, a read-only or
    unwritable folder, wherever in the chain of exceptions (MLflow and Ray wrap them)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None or any(w in str(seen) for w in ENVIRONMENT_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # One small checkpoint per epoch is what these trials do; Ray's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        return command(args)
    except StoreGoneError as err:
        return one_line(err, EXIT_ENVIRONMENT, args.debug)
    except (SpecError, ConfigError, StudyError) as err:
        return one_line(err, EXIT_REFUSED, args.debug)
    except Exception as err:
        if unauthenticated(err):  # on resume or status: the record holds no credentials
            return one_line(unauthenticated_error(), EXIT_REFUSED, args.debug)
        code = EXIT_ENVIRONMENT if environment_fault(err) else EXIT_FAILED_TRIALS
        return one_line(err, code, args.debug, unexpected=True)


def command(args: argparse.Namespace) -> int:
    """Run the command; the exit code says how a launch or resume ended (0 finished, 1 some trials
    failed, 2 refused, 3 the environment failed, 130 interrupted: `resume` continues it)."""
    resolve_environment()  # a credentialed $MLFLOW_TRACKING_URI gives its credentials to the environment
    if args.command == "estimate":  # issue 21
        return estimate_cli.run(args, spec_from_args)
    if args.command == "kuberay":  # issue 17
        return kuberay.run(args, spec_from_args)
    if args.command == "slurm":  # issue 17
        return slurm.run(args, spec_from_args)
    if args.command == "status":
        if slurm.submitted_only(args.runs_dir, args.name):  # issue 17: the job has not started its driver
            return slurm.print_submitted(args.runs_dir, args.name, args.json)
        info = status(args.name, runs_dir=args.runs_dir)
        estimate = estimate_record.progress(read_record(args.runs_dir, args.name),  # issue 21
                                            study_dir(args.runs_dir, args.name))
        job = slurm.job_state(args.runs_dir, args.name)  # issue 17: None unless run through Slurm
        extra = {"estimate": estimate} | ({"slurm": job} if job is not None else {})
        print(json.dumps({**info.to_dict(), **extra}, indent=2)) if args.json else print_status(info, estimate, job)
        return 0
    if args.command == "list":
        return list_command(args.runs_dir)
    spec = spec_from_args(args) if args.command == "launch" else None
    name = spec.name if spec is not None else args.name
    try:
        if spec is not None:
            record, outcome = launch(spec, runs_dir=args.runs_dir, tracking_uri=args.tracking_uri,
                                     storage=args.storage, address=args.address,
                                     overrides=parse_overrides(args.overrides), verbose=args.verbose)
        else:
            record, outcome = resume(args.name, runs_dir=args.runs_dir, verbose=args.verbose)
    except KeyboardInterrupt:
        return interrupted_before_trials(args.runs_dir, name)
    print_status(status(record.name, runs_dir=args.runs_dir))
    if args.no_figures or outcome.state == "interrupted" or has_figures(args.runs_dir, record.name):
        return outcome.exit_code
    try:
        make_figures(record.name, record.tracking_uri, args.runs_dir, args.verbose)
    except KeyboardInterrupt:
        print(f"[study] {record.name} {outcome.state}; its figures were interrupted: `python -m study resume "
              f"{record.name}` makes them (and changes nothing else)", file=sys.stderr, flush=True)
    return outcome.exit_code


def has_figures(runs_dir: Path, name: str) -> bool:
    """Whether the study's figures were made (a resumed study that ended makes them only if not)."""
    return (study_dir(runs_dir, name) / "figures" / "report.html").is_file()


def interrupted_before_trials(runs_dir: Path, name: str) -> int:
    """Ctrl-C before the study's trials ran: whether there is a study to resume says the record."""
    try:
        recorded = read_record(runs_dir, name).parent_run_id is not None
    except StudyError:
        recorded = False
    if recorded:
        print(f"interrupted before the trials ran; `python -m study resume {name}` continues it", file=sys.stderr)
    else:
        print("interrupted before the study was recorded; nothing to resume", file=sys.stderr)
    return EXIT_INTERRUPTED


def list_command(runs_dir: Path) -> int:
    """Every study under `runs_dir`; one that cannot be read is named with why, the others still listed."""
    for name in list_studies(runs_dir):
        try:
            print_status(status(name, runs_dir=runs_dir))
        except StudyError as err:
            print(f"{name}: cannot be read: {one_line_text(err)}")
    return 0


def one_line_text(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())

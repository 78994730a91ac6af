"""One trial, without Ray, and the re-evaluation of a trained one.

    python -m trainables run --config FILE.yaml [--set key=value ...]
        train, evaluate, log to MLflow (the final network too), print a short summary
    python -m trainables evaluate --run-id ID [--corruption-source official|generated|on_the_fly|auto]
                                  [--corruption-path DIR] [--data-root DIR] [--protocol P] [--name NAME]
        evaluate a logged model on another clean/corrupted set; results go into its run as eval/<set>/...

Exit codes: 0 done, 1 the trial failed (its loss diverged, or an unexpected error), 2 a mistake in
the command, 130 interrupted (Ctrl-C or SIGTERM): the run ends KILLED, and the same command with
the same --checkpoint-dir continues it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

from contract import debug_anywhere, one_line, safe_uri
from trainables.checkpoint import CheckpointError, has_checkpoint, read_checkpoint
from trainables.config import ConfigError, TrialConfig, parse_overrides
from trainables.corruptions import OfficialSetNotFoundError
from trainables.corruptions.protocols import PROTOCOLS
from trainables.corruptions.provision import resolve_corruption_set
from trainables.data import DatasetError, DatasetNotFoundError, prepare_dataset
from trainables.pipeline import DeviceError, resolve_device
from trainables.reevaluate import EVAL_PREFIX, EvaluateError, EvaluateRequest, evaluate_logged_model
from trainables.tracking import DEFAULT_EXPERIMENT, FinishedRunError, MlflowTrialLogger
from trainables.train import TrialDivergedError, TrialResult, run_trial

# Mistakes a user can make, reported in one line (exit 2); a trial that diverged exits 1.
USER_ERRORS = (ConfigError, DatasetError, DatasetNotFoundError, EvaluateError, OfficialSetNotFoundError, CheckpointError,
               DeviceError, FinishedRunError)

INTERRUPTED = 130  # Ctrl-C or SIGTERM: what shells report for Ctrl-C (128 + SIGINT), as `study` does
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # on by default: one bar per downloaded file
RUN_ID_FILE = "mlflow_run_id"
SUMMARY_KEYS = ("clean/error", "clean/nll", "clean/ece", "corrupt/error", "corrupt/nll", "corrupt/ece",
                "valid/error", "valid/corrupt/error", "train/loss", "train/error")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainables", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train, evaluate and log one trial")
    run.add_argument("--config", type=Path, help="YAML file of TrialConfig keys (omit for the defaults)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key; repeatable")
    run.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                     "else sqlite:///mlflow.db in the working directory)")
    run.add_argument("--run-name", help="MLflow run name")
    run.add_argument("--checkpoint-dir", type=Path, help="save a checkpoint there after every epoch; "
                     "if it already holds one, continue that trial (and its MLflow run)")
    again = commands.add_parser("evaluate", help="evaluate a logged model on another clean/corrupted set")
    again.add_argument("--run-id", required=True, help="the trial's MLflow run")
    again.add_argument("--tracking-uri", help="MLflow tracking URI (default as for run)")
    again.add_argument("--corruption-source", choices=("official", "generated", "on_the_fly", "auto", "none"),
                       help="the corrupted set (default: the trial's own)")
    again.add_argument("--corruption-path", help="its folder (official / generated; auto: where to look)")
    again.add_argument("--data-root", help="another clean set in the dataset's layout (default: the trial's)")
    again.add_argument("--name", help="the set's name in the metric prefix eval/<name>/ (default: from the "
                       "source and folders)")
    again.add_argument("--protocol", choices=tuple(PROTOCOLS),
                       help="corruption protocol: a release's severity table and JPEG round trip "
                            "(default: the trial's own)")
    again.add_argument("--device", default="auto")
    debug_anywhere(commands)
    return parser.parse_args(argv)


def build_config(path: Path | None, overrides: list[str]) -> TrialConfig:
    values = parse_overrides(overrides)
    return TrialConfig.from_yaml(path, values) if path else TrialConfig.from_dict(values)


def start_logger(args: argparse.Namespace, cfg: TrialConfig) -> MlflowTrialLogger:
    """A new MLflow run, or the interrupted one when resuming from the checkpoint folder. The
    checkpoint is checked first (readable, made with this config), and a finished run is never
    reopened: nothing is touched when continuing is refused."""
    folder = args.checkpoint_dir
    run_id_file = folder / RUN_ID_FILE if folder else None
    run_id, history = None, []
    if has_checkpoint(folder):
        history = read_checkpoint(folder, cfg.to_dict())["history"]
        run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    logger = MlflowTrialLogger(cfg, experiment=args.experiment, tracking_uri=args.tracking_uri,
                               run_name=args.run_name, run_id=run_id, refuse_finished=True)
    if run_id_file:
        folder.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(logger.run_id)
    for metrics in history:  # an epoch checkpointed but not logged: the stop fell between the two
        logger.report(metrics)
    return logger


def print_epoch(metrics: dict[str, float]) -> None:
    shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("train/loss", "train/error", "clean/error") if k in metrics)
    print(f"epoch {int(metrics['epoch']):3d}  {shown}  ({metrics['train/images_per_s']:.0f} img/s)", flush=True)


def print_summary(cfg: TrialConfig, result: TrialResult, logger: MlflowTrialLogger, seconds: float) -> None:
    molly = f"roles {cfg.roles}, beta {cfg.beta:g}, label mode {cfg.label_mode}" if cfg.mollify else "off"
    print(f"\n{cfg.dataset} / {cfg.model} / augment {cfg.augment} / mollification {molly}")
    for key in SUMMARY_KEYS:
        if key in result.metrics:
            print(f"  {key:<20} {result.metrics[key]:.4f}")
    print(f"done in {seconds:.1f} s; MLflow run {logger.run_id} at {safe_uri(logger.client.tracking_uri)}")


def run(args: argparse.Namespace) -> int:
    cfg = resolve_corruption_set(build_config(args.config, args.overrides))  # the params say what runs
    resolve_device(cfg.device)  # a missing device or dataset fails before any run is created
    prepare_dataset(cfg.dataset, cfg.data_root)
    logger = start_logger(args, cfg)
    start = time.perf_counter()

    def report(metrics: dict[str, float], checkpoint: Path | None) -> None:
        logger.report(metrics, checkpoint)
        print_epoch(metrics)

    try:
        result = run_trial(cfg, report=report, checkpoint_dir=args.checkpoint_dir)
        logger.finish(result)
    except KeyboardInterrupt:
        return interrupted(logger, args.checkpoint_dir)
    except BaseException as err:
        logger.fail(err)
        raise
    print_summary(cfg, result, logger, time.perf_counter() - start)
    return 0


def interrupted(logger: MlflowTrialLogger, folder: Path | None) -> int:
    """Ctrl-C or SIGTERM: the run ends KILLED, not FAILED, and says how to continue it; the last
    finished epoch's checkpoint stays (it is replaced atomically, never half written)."""
    how = (f"rerun the same command with --checkpoint-dir {folder} to continue" if folder else
           "without --checkpoint-dir it cannot be continued")
    logger.interrupt(how)
    print(f"interrupted after epoch {logger.logged_through}; MLflow run {logger.run_id} is KILLED; {how}",
          file=sys.stderr)
    return INTERRUPTED


def evaluate(args: argparse.Namespace) -> int:
    request = EvaluateRequest(run_id=args.run_id, tracking_uri=args.tracking_uri,
                              corruption_source=args.corruption_source, corruption_path=args.corruption_path,
                              data_root=args.data_root, protocol=args.protocol, name=args.name,
                              device=args.device)
    name, metrics = evaluate_logged_model(request)
    prefix = f"{EVAL_PREFIX}/{name}/"
    print(f"run {args.run_id}: {len(metrics)} metrics logged under {prefix}")
    for key in SUMMARY_KEYS:
        if prefix + key in metrics:
            print(f"  {prefix + key:<40} {metrics[prefix + key]:.4f}")
    return 0


@contextlib.contextmanager
def quiet_mlflow(debug: bool) -> Iterator[None]:
    """For the command only (undone after it): no MLflow progress bars, unless the environment asks
    for them, and without --debug no INFO lines (creating a store's tables is not the output)."""
    logger, bar = logging.getLogger("mlflow"), os.environ.get(PROGRESS_BAR)
    level = logger.level
    os.environ[PROGRESS_BAR] = bar or "false"
    logger.setLevel(level if debug else logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = bar


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) interrupts as Ctrl-C does. The handler raises itself
    rather than resending SIGINT, which a process started in the background may ignore."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with quiet_mlflow(args.debug), sigterm_as_ctrl_c():
            return run(args) if args.command == "run" else evaluate(args)
    except KeyboardInterrupt:  # before the trial's run existed, or during `evaluate`: nothing to continue
        print(f"interrupted: {args.command} did not complete", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as err:
        return one_line(err, 2, args.debug)
    except TrialDivergedError as err:
        return one_line(err, 1, args.debug)
    except Exception as err:
        return one_line(err, 1, args.debug, unexpected=True)


if __name__ == "__main__":
    sys.exit(main())

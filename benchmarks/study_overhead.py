"""The platform's overhead on the smoke study, measured in one command:

1. baseline: the smoke study's trial configurations run one after another in this process with
   `trainables.run_trial` (no Ray, no Optuna, no MLflow);
2. the smoke study through `python -m study launch smoke` (local Ray, Optuna TPE, MLflow SQLite).

Reports the study's wall time against the sum of its trials' own run times (MLflow start to end)
and against the baseline, and the time from `launch` to the first trial starting.

    python benchmarks/study_overhead.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from study.spec import load_spec
from trainables.config import TrialConfig
from trainables.train import run_trial

REPO = Path(__file__).resolve().parents[1]


def baseline_seconds() -> float:
    """The smoke preset's fixed settings with the default knobs, 4 times, in-process."""
    spec = load_spec("smoke")
    start = time.perf_counter()
    for seed in range(spec.num_samples):
        run_trial(TrialConfig.from_dict({**spec.trial, "seed": seed}))
    return time.perf_counter() - start


def study_seconds(folder: Path) -> dict:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "study", "--runs-dir", str(folder / "runs"), "launch", "smoke",
           "--tracking-uri", uri, "--storage", f"sqlite:///{folder / 'optuna.db'}", "--no-figures"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    launched = time.time()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1200)
    wall = time.time() - launched
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.`mollify.kind` = 'trial'")
    trial_seconds = sum((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    first_start = min(r.info.start_time for r in runs) / 1000
    return {"wall_s": wall, "trials": len(runs), "sum_trial_s": trial_seconds,
            "launch_to_first_trial_s": first_start - launched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    args = parser.parse_args()
    base = baseline_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        study = study_seconds(Path(tmp))
    result = {"baseline_sequential_s": base, **study}
    print(f"baseline: 4 smoke trials in-process, one after another: {base:.1f} s")
    print(f"study:    wall {study['wall_s']:.1f} s for {study['trials']} trials (2 at a time); "
          f"trials' own time (MLflow start to end) {study['sum_trial_s']:.1f} s")
    print(f"          launch -> first trial started {study['launch_to_first_trial_s']:.1f} s; "
          f"wall / baseline x{study['wall_s'] / base:.2f}; wall - sum of trials {study['wall_s'] - study['sum_trial_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

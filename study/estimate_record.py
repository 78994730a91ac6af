"""The estimate in a study's life: printed and stored at launch, compared with the actual times
while the study runs (`study status`) and when it ends.

Stored: `<runs dir>/<name>/estimate.json` ({"estimate": ..., "actual": ...}, the actual part written
when the driver ends) and the same file on the parent run as `study/estimate.json`, with the tag
`mollify.estimate` (one line); `estimate-spec.yaml` beside it is the spec the child process estimated and, at the end, the metrics `estimate/wall_s`, `actual/wall_s`,
`estimate/trial_s_mean`, `actual/trial_s_mean`. Nothing here may stop a study: a failure to
estimate is one console line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from contract import write_atomic
from study.console import say
from study.estimate import (ESTIMATE_ARTIFACT, ESTIMATE_FILE, ESTIMATE_SPEC_FILE, ESTIMATE_TAG, FINISH_S, SKIP_ENV, WORKER_S, Estimate,
                            duration, render, sig, summary)
from study.placement import Demand, Resources, simulate
from study.record import TRIAL_NUMBER_TAG, StudyRecord, trial_runs
from study.spec import StudySpec
from trainables.tracking import ensure_experiment


def process_age() -> float:
    """Seconds since this process started (the launch command's own wall time so far)."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # no psutil: the estimate's own start stands in
        return 0.0


def at_launch(spec: StudySpec, record: StudyRecord, folder: Path, cluster: dict[str, float]) -> None:
    """Estimate on Ray's resources, print it, store it beside the record and on the parent run. The
    calibration runs in a child process (study/estimate_cli.py), so that the driver never holds its
    device memory; its progress lines go to the study's log."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    try:
        est = estimate_in_child(spec, folder, cpus=float(cluster.get("CPU", 1)), gpus=int(cluster.get("GPU", 0)))
        for line in render(est):
            say(line)
        data = {"estimate": est.to_json(), "written_at": time.time(), "launched_ago_s": process_age(), "actual": None}
        write_atomic(folder / ESTIMATE_FILE, json.dumps(data, indent=2))
        client = MlflowClient(record.tracking_uri)
        client.log_dict(record.parent_run_id, data, ESTIMATE_ARTIFACT)
        client.set_tag(record.parent_run_id, ESTIMATE_TAG, summary(est))
    except Exception as err:  # the estimate informs; it never stops a launch
        say(f"[estimate] no estimate: {type(err).__name__}: {err}")


def estimate_in_child(spec: StudySpec, folder: Path, *, cpus: float, gpus: int) -> Estimate:
    spec_file = folder / ESTIMATE_SPEC_FILE
    spec_file.write_text(yaml.safe_dump(spec.effective(), sort_keys=False))
    say(f"[estimate] calibrating {spec.name}'s trial shapes on this machine (cached per shape; "
        f"{SKIP_ENV}=1 skips it)")
    cmd = [sys.executable, "-m", "study.estimate_cli", str(spec_file), "--name", spec.name, "--preset", spec.preset,
           "--cpus", str(cpus), "--gpus", str(gpus)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stderr, file=sys.stderr, flush=True)  # inside the quiet console: the study's log
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit code {done.returncode}")
    return Estimate(**json.loads(done.stdout))


def read(folder: Path) -> dict[str, Any] | None:
    path = folder / ESTIMATE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:  # written by a version that did not write atomically, cut off: no estimate to show
        return None


def actual_trials(record: StudyRecord) -> list[dict[str, Any]]:
    """Each trial run's number, status and seconds (to now, while running), from MLflow."""
    client = MlflowClient(record.tracking_uri)
    runs = trial_runs(client, ensure_experiment(client, record.name))
    now = time.time() * 1000
    out = [{"number": int(r.data.tags.get(TRIAL_NUMBER_TAG, -1)), "status": r.info.status,
            "seconds": ((r.info.end_time or now) - r.info.start_time) / 1000} for r in runs]
    return sorted(out, key=lambda t: t["number"])


def at_end(spec: StudySpec, record: StudyRecord, folder: Path, state: str = "finished") -> None:
    """The actual times beside the estimate: the wall time from launch (a resumed study's includes its
    pause), each trial run's time; `state` as the driver ended (interrupted: `resume` continues,
    and rewrites this when it ends)."""
    data = read(folder)
    if data is None:
        return
    try:
        est = data["estimate"]
        wall = time.time() - data["written_at"] + data["launched_ago_s"]  # this driver's whole run
        trials = actual_trials(record)
        data["actual"] = {"state": state, "wall_seconds": round(wall, 1), "trials": trials}
        write_atomic(folder / ESTIMATE_FILE, json.dumps(data, indent=2))
        client = MlflowClient(record.tracking_uri)
        client.log_dict(record.parent_run_id, data, ESTIMATE_ARTIFACT)
        now = int(time.time() * 1000)
        ended = [t["seconds"] for t in trials if t["status"] != "RUNNING"]
        values = {"estimate/wall_s": est["wall_seconds"], "actual/wall_s": wall,
                  "estimate/trial_s_mean": statistics.mean(est["trial_seconds"])}
        if ended:
            values["actual/trial_s_mean"] = statistics.mean(ended) + WORKER_S  # the run starts after the worker
        client.log_batch(record.parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        say(f"[estimate] estimated {duration(est['wall_seconds'])}, took {duration(wall)}")
    except Exception as err:
        say(f"[estimate] the actual times were not recorded: {type(err).__name__}: {err}")


def progress(record: StudyRecord, folder: Path) -> dict[str, Any] | None:
    """For `study status`: the estimate, the trials ended against their estimates, and the time left
    (the remaining trials placed again, scaled by how the ended ones compared with their estimate)."""
    data = read(folder)
    if data is None:
        return None
    est = data["estimate"]
    if data.get("actual") and data["actual"].get("state") != "interrupted":
        return {"estimated_wall_s": est["wall_seconds"], "actual_wall_s": data["actual"]["wall_seconds"],
                "estimated_trial_s": est["trial_seconds"], "left_s": 0.0, "ended": None}
    trials = actual_trials(record)
    planned = est["trial_seconds"]
    at = lambda t: planned[t["number"]] if 0 <= t["number"] < len(planned) else statistics.mean(planned)
    ended = [t for t in trials if t["status"] != "RUNNING"]
    ratio = (sum(t["seconds"] + WORKER_S for t in ended) / sum(at(t) for t in ended)) if ended else 1.0
    running = [max(at(t) * ratio - t["seconds"] - WORKER_S, 0.0) for t in trials if t["status"] == "RUNNING"]
    started = {t["number"] for t in trials}
    waiting = [p * ratio for i, p in enumerate(planned) if i not in started][: max(len(planned) - len(trials), 0)]
    r = est["resources"]
    left = simulate(running + waiting, Demand(r["cpus_per_trial"], r["gpus_per_trial"]),
                    Resources(r["cpus"], int(r["gpus"])), max_concurrent=r["max_concurrent"]).wall + FINISH_S
    return {"estimated_wall_s": est["wall_seconds"], "elapsed_s": time.time() - est["made_at"],
            "ended": len(ended), "ratio": sig(ratio), "left_s": sig(left), "estimated_trial_s": planned}


def status_line(info: dict[str, Any]) -> str | None:
    e = info.get("estimate")
    if not e:
        return None
    if "actual_wall_s" in e:
        return f"  estimate: {duration(e['estimated_wall_s'])}; took {duration(e['actual_wall_s'])}"
    pace = f"; ended trials took x{e['ratio']:g} their estimate" if e["ended"] else ""
    return (f"  estimate: {duration(e['estimated_wall_s'])} in all, {duration(e['elapsed_s'])} so far{pace}; "
            f"about {duration(e['left_s'])} left")

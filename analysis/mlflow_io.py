"""All of analysis's MLflow access: the trial runs of one study as a tidy DataFrame, the study's
parent run, the trials' reliability artifacts, and attaching a report to the parent run. Everything
else in `analysis` is a pure function of what these return.

The conventions read here (written by `trainables` and `study`, their names declared in
contract/, which imports nothing but the standard library): one experiment per study; one parent run tagged `mollify.kind=study`, with
the study's record as data in `study/record.json` (older studies: tags only); one child run per
trial tagged `mollify.kind=trial`, `mlflow.parentRunId`, `mollify.trial_number`, `mollify.seed`
(and `mollify.stopped_early` when the scheduler stopped it, status KILLED); params = the trial
config's knobs that acted, as strings; metrics logged per epoch (the latest value is the final
one); reliability bins as `reliability/<set>.json` artifacts; the corruption grid's cells as the
table `corrupt/cells.json` (runs logged before it have them as metrics `corrupt/<c>/s<k>/<m>`),
from which the per-corruption and per-severity means that MLflow no longer keeps as metrics
(`contract.charted`) are rebuilt with the trial's own function, `contract.summarize_cells`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from contract import (CELLS_ARTIFACT, ENDPOINTS_KEY, KIND_TAG, LEGACY_SEARCH_SPACE_TAG, OBJECTIVES_TAG, PARENT_TAG,
                      PRESET_TAG, RECORD_ARTIFACT, RELIABILITY_DIR, REPORT_DIR, SEARCH_TAG, SEED_TAG,
                      SELECT_ON_TEST_TAG, STOPPED_EARLY_TAG, STUDY_TAG, TRIAL_NUMBER_TAG, BENCHMARK, METRICS,
                      Rule, corruption_metric, rules_from_record, summarize_cells, tracking_uri)

META_COLUMNS = ("run_id", "run_name", "status", "stopped_early", "study", "trial_number", "seed", "start_time")
METRIC_PREFIX = "metrics."  # for metric names without a '/', which could clash with a param (`lr`)
PAGE_SIZE = 1000
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


resolve_tracking_uri = tracking_uri  # explicit, else $MLFLOW_TRACKING_URI, else ./mlflow.db


def _client(tracking_uri: str | None) -> MlflowClient:
    return MlflowClient(resolve_tracking_uri(tracking_uri))


def _experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL))
    raise LookupError(f"no MLflow experiment {name!r} at {client.tracking_uri}; "
                      f"experiments there: {', '.join(names) or 'none'}")


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list[Run]:
    """Every active run of the experiment matching the filter, page by page."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=PAGE_SIZE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# --- trial runs ------------------------------------------------------------------------------------

def parse_param(text: str) -> Any:
    """Undo MLflow's str(value): 'None' -> None, 'True'/'False' -> bool, numbers -> int or float,
    anything else stays a string."""
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _is_parent(run: Run, parent_ids: set[str]) -> bool:
    return run.data.tags.get(KIND_TAG) == "study" or run.info.run_id in parent_ids


def _metric_column(name: str) -> str:
    return name if "/" in name else METRIC_PREFIX + name


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cell_tables(run: Run) -> list[str]:
    """The run's corruption-grid tables (`corrupt/cells.json`, `eval/<set>/corrupt/cells.json`), as
    MLflow's own tag lists the tables `log_table` wrote."""
    try:
        logged = json.loads(run.data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    except json.JSONDecodeError:
        return []
    return [item["path"] for item in logged
            if item.get("type") == "table" and item.get("path", "").endswith(f"corrupt/{CELLS_ARTIFACT}")]


def _read_table(client: MlflowClient, run_id: str, path: str, scratch: Path) -> pd.DataFrame:
    table = json.loads(Path(client.download_artifacts(run_id, path, str(scratch))).read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])  # mlflow.log_table's JSON


def summaries_from_cells(table: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """A cells table (columns corruption, severity, one per metric) -> every summary of it, named
    as a trial names them (`prefix` + `corrupt/<c>/<m>`, `corrupt/s<k>/<m>`, ...)."""
    metrics = [m for m in METRICS if m in table]
    cells = {(str(r["corruption"]), int(r["severity"])): {m: float(r[m]) for m in metrics if pd.notna(r[m])}
             for r in table.to_dict("records")}
    return {prefix + name: value for name, value in summarize_cells(cells).items()}


def _from_cells(client: MlflowClient, run: Run, scratch: Path) -> dict[str, float]:
    """The summaries a run keeps only in its cells tables (its metrics win where both have one);
    nothing to read for runs that logged them as metrics (before `contract.charted`)."""
    out: dict[str, float] = {}
    for path in _cell_tables(run):
        prefix = path.removesuffix(f"corrupt/{CELLS_ARTIFACT}")
        if any(prefix + corruption_metric(c) in run.data.metrics for c in BENCHMARK):
            continue
        folder = scratch / run.info.run_id / prefix
        folder.mkdir(parents=True, exist_ok=True)
        out.update(summaries_from_cells(_read_table(client, run.info.run_id, path, folder), prefix))
    return out


def _row(run: Run, experiment: str, derived: Mapping[str, float] | None = None) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    row: dict[str, Any] = {key: parse_param(value) for key, value in params.items()}
    row.update({_metric_column(k): v for k, v in {**(derived or {}), **run.data.metrics}.items()})
    seed = row.pop("seed", None)
    row.update(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        status=run.info.status,
        stopped_early=tags.get(STOPPED_EARLY_TAG) == "true",
        study=tags.get(STUDY_TAG, experiment),
        trial_number=_int_or_none(tags.get(TRIAL_NUMBER_TAG)),
        seed=seed if seed is not None else _int_or_none(tags.get(SEED_TAG)),
        start_time=pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
    )
    return row


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    rest = [c for c in frame.columns if c not in META_COLUMNS]
    params = [c for c in rest if "/" not in c and not c.startswith(METRIC_PREFIX)]
    metrics = sorted(c for c in rest if c not in params)
    return frame[list(META_COLUMNS) + params + metrics]


def load_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per trial run of the study `experiment`, in any status (the `status` column says
    which; analysis keeps FINISHED ones). Parent runs (tagged `mollify.kind=study`, or named by
    another run's `mlflow.parentRunId`) are left out.

    Columns: run_id, status, stopped_early (the scheduler stopped the trial), study, trial_number,
    seed, start_time; then one per config param,
    typed back from MLflow's strings (see `parse_param`; a param a run lacks is missing, NaN);
    then one per metric holding its last logged value, named as logged (`clean/error`,
    `corrupt/gaussian_noise/s3/ece`, ...), and the corruption summaries a run keeps in its cells
    table (`corrupt/gaussian_noise/error`, `corrupt/s3/nll`, the cells), rebuilt from it. Metric
    names without a '/' (only `lr`) become `metrics.<name>`, because the config has a param of the
    same name."""
    client = _client(tracking_uri)
    runs = _search_all(client, _experiment_id(client, experiment))
    parent_ids = {r.data.tags[PARENT_TAG] for r in runs if PARENT_TAG in r.data.tags}
    trials = [run for run in runs if not _is_parent(run, parent_ids)]
    with _no_progress_bars(), tempfile.TemporaryDirectory(prefix="mollify-cells-") as tmp:
        rows = [_row(run, experiment, _from_cells(client, run, Path(tmp))) for run in trials]
    if not rows:
        return pd.DataFrame(columns=list(META_COLUMNS))
    frame = _order_columns(pd.DataFrame(rows))
    frame["trial_number"] = frame["trial_number"].astype("Int64")
    return frame.sort_values(["trial_number", "start_time"], na_position="last").reset_index(drop=True)


# --- the study's parent run -----------------------------------------------------------------------

@dataclass(frozen=True)
class StudyInfo:
    """The study's parent run: what was searched, how, and for which objectives."""

    run_id: str
    name: str
    preset: str | None = None
    search: str | None = None  # tpe, gp, nsga2, grid or random
    objectives: tuple[tuple[str, str], ...] = ()  # (metric, "min" | "max")
    # key -> domain ({"type": float|int|categorical|grid, ...}) and, for a conditional key,
    # "active_when": the clauses under which it acted (contract.rule_holds)
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    select_on_test: bool = False  # the search or early stopping optimised test metrics, knowingly
    label_keys: tuple[str, ...] = ()  # the keys that tell the study's trials apart (seed aside)
    # which knob acts under which settings: the rules the study stored, else the contract's
    active_when: dict[str, Rule] = field(default_factory=lambda: rules_from_record(None))
    # the pre-registered endpoints as recorded (analysis.endpoints.read_endpoints); None: none declared
    endpoints: dict[str, Any] | None = None


def _json_tag(tags: Mapping[str, str], key: str, default: Any) -> Any:
    text = tags.get(key)
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"parent-run tag {key} is not JSON: {text!r} ({err})") from None


def load_study_info(experiment: str, tracking_uri: str | None = None) -> StudyInfo | None:
    """The parent run of study `experiment` (tag `mollify.kind=study`); None when the experiment
    has none (trials run on their own). With several, the latest started one."""
    client = _client(tracking_uri)
    parents = _search_all(client, _experiment_id(client, experiment),
                          filter_string=f"tags.`{KIND_TAG}` = 'study'")
    if not parents:
        return None
    run = max(parents, key=lambda r: r.info.start_time)
    tags = dict(run.data.tags)
    record = _record(client, run.info.run_id)
    if record is None:  # recorded before study/record.json: the tags say as much
        record = {"study": tags.get(STUDY_TAG, experiment), "preset": tags.get(PRESET_TAG),
                  "search": tags.get(SEARCH_TAG), "objectives": _json_tag(tags, OBJECTIVES_TAG, []),
                  "search_space": _json_tag(tags, LEGACY_SEARCH_SPACE_TAG, {}),
                  "select_on_test": tags.get(SELECT_ON_TEST_TAG) == "true", "label_keys": []}
    return StudyInfo(
        run_id=run.info.run_id,
        name=record["study"],
        preset=record["preset"],
        search=record["search"],
        objectives=tuple((str(m), str(d)) for m, d in record["objectives"]),
        search_space=record["search_space"],
        tags=tags,
        select_on_test=bool(record["select_on_test"]),
        label_keys=tuple(record["label_keys"]),
        active_when=rules_from_record(record),
        endpoints=record.get(ENDPOINTS_KEY),
    )


def _record(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The parent run's `study/record.json`, or None when it has none."""
    folder, name = RECORD_ARTIFACT.rsplit("/", 1)
    if not any(a.path == RECORD_ARTIFACT for a in client.list_artifacts(run_id, folder)):
        return None
    with _no_progress_bars(), tempfile.TemporaryDirectory(prefix="mollify-record-") as tmp:
        return json.loads(Path(client.download_artifacts(run_id, RECORD_ARTIFACT, tmp)).read_text())


# --- artifacts ------------------------------------------------------------------------------------

Reliability = dict[str, dict[str, np.ndarray]]  # set name ("clean", "corrupt_s5") -> bins


def _run_reliability(client: MlflowClient, run_id: str, scratch: Path) -> Reliability:
    out: Reliability = {}
    for item in client.list_artifacts(run_id, RELIABILITY_DIR):
        if item.is_dir or not item.path.endswith(".json"):
            continue
        local = Path(client.download_artifacts(run_id, item.path, str(scratch)))
        bins = json.loads(local.read_text())
        out[Path(item.path).stem] = {k: np.asarray(v, dtype=float) for k, v in bins.items()}
    return out


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded file unless this variable says otherwise."""
    before = os.environ.get(PROGRESS_BAR_VARIABLE)
    os.environ[PROGRESS_BAR_VARIABLE] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR_VARIABLE, None)
        else:
            os.environ[PROGRESS_BAR_VARIABLE] = before


def _per_run(run_ids: Iterable[str], tracking_uri: str | None, read: Callable[[MlflowClient, str, Path], Any],
             prefix: str) -> dict[str, Any]:
    """run_id -> read(client, run_id, scratch folder) for each run, downloads quiet and in one
    temporary folder; runs whose `read` gives None are left out."""
    client = _client(tracking_uri)
    with _no_progress_bars(), tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        out = {}
        for run_id in run_ids:
            scratch = Path(tmp) / run_id
            scratch.mkdir()
            value = read(client, run_id, scratch)
            if value is not None:
                out[run_id] = value
        return out


def load_reliability(run_ids: Iterable[str], tracking_uri: str | None = None) -> dict[str, Reliability]:
    """run_id -> {set name -> {"count", "confidence", "accuracy"}: arrays over the 15 bins}, from
    each run's `reliability/*.json` artifacts; a run without them maps to {}."""
    return _per_run(run_ids, tracking_uri, _run_reliability, "mollify-reliability-")


TRIAL_CELLS = f"corrupt/{CELLS_ARTIFACT}"  # a trial's test-set corruption grid


def _run_cells(client: MlflowClient, run_id: str, scratch: Path) -> pd.DataFrame | None:
    if not any(a.path == TRIAL_CELLS for a in client.list_artifacts(run_id, "corrupt")):
        return None
    return _read_table(client, run_id, TRIAL_CELLS, scratch)


def load_cells(run_ids: Iterable[str], tracking_uri: str | None = None) -> dict[str, pd.DataFrame]:
    """run_id -> the run's corruption grid (`corrupt/cells.json`: columns corruption, severity and
    one per metric, as fractions), for the runs that have one."""
    return _per_run(run_ids, tracking_uri, _run_cells, "mollify-cells-")


def log_report(parent_run_id: str, out_dir: str | Path, tracking_uri: str | None = None) -> None:
    """Attach the whole report folder to the study's parent run, under `figures/`."""
    _client(tracking_uri).log_artifacts(parent_run_id, str(out_dir), REPORT_DIR)

"""The study's record: everything a study writes for the people who read it (the MLflow UI,
optuna-dashboard, `study status`) and for `analysis`, declared here and nowhere else.

Written at launch:
- `<runs dir>/<name>/study.json` (`StudyRecord`): what `resume` and `status` need.
- The MLflow parent run (tag `mollify.kind=study`): the tags below; the effective spec (the preset
  with the command line's changes and --set overrides, as it runs) as flattened params and as
  `study/spec.yaml`; `study/record.json`, the record as data (`record_data`: objectives, the search
  space with the rule under which each key acts, the grid's trials); a description.
- The Optuna study of a search: its metric names and user attributes naming the MLflow experiment,
  parent run and tracking server.
Updated as trials end (`update_parent`): the parent run's counts and best objective so far as
metrics, and its description. Each trial run is named by what it is (`trial_run_name`) and each
Optuna trial carries its MLflow run's id. The names both sides use are contract/'s;
tests/test_record.py reads a study back as `analysis` does, and an older study's record too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from contract import (ACTIVE_WHEN, CONFIG_ARTIFACT, CORRUPTION_SETS_TAG, DESCRIPTION_TAG, GIT_COMMIT_TAG,  # noqa: F401
                      KIND_TAG, LAUNCH_TAG, MOLLIFYING, OBJECTIVES_TAG, PRESET_TAG, RECORD_ARTIFACT, RECORD_SCHEMA,
                      SEARCH_TAG, SELECT_ON_TEST_TAG, SPEC_ARTIFACT, STATE_TAG, STOPPED_EARLY_TAG,
                      STUDY_TAG, TOTAL_TRIALS_TAG, ENDPOINTS_KEY, TRIAL_ID_TAG, TRIAL_NUMBER_TAG, is_active, rules_data,
                      safe_uri, write_atomic)
from study.spec import StudySpec, expand_grid, parse_spec
from trainables.config import TrialConfig
from trainables.tracking import ensure_experiment, git_commit

# --- the contract with analysis (tag and artifact names: contract/) --------------------------------
BEST_PREFIX = "best/"  # parent-run metric best/<objective>: the best value so far
COUNT_METRICS = ("trials/finished", "trials/failed", "trials/stopped_early")
OPTUNA_RUN_ATTR = "mlflow_run_id"  # Optuna trial user attribute
OPTUNA_RUN_NAME_ATTR = "mlflow_run_name"
OPTUNA_RUN_URL_ATTR = "mlflow_run_url"  # where the MLflow UI shows the run

RECORD_FILE = "study.json"


def study_dir(runs_dir: Path, name: str) -> Path:
    """A study's folder: its record, Ray's experiment (`tune/`) and its log."""
    return runs_dir.resolve() / name


# --- the local record ----------------------------------------------------------------------------

class RecordError(RuntimeError):
    """A study folder whose record cannot be read (damaged, or written by another program)."""


@dataclass(frozen=True)
class StudyRecord:
    """What `resume` and `status` need, in `<runs dir>/<name>/study.json`. The launch claims the
    name by writing it whole before anything else exists (`parent_run_id` None: nothing recorded
    in MLflow yet), and writes it again once the parent run exists; every write is atomic (a
    temporary file renamed into place), so a reader never sees half a record."""

    name: str
    preset: str
    spec: dict[str, Any]  # the effective spec (StudySpec.effective): what runs, overrides included
    overrides: dict[str, Any]  # the --set values, for the record (already inside `spec`)
    tracking_uri: str
    optuna_storage: str
    parent_run_id: str | None  # None until the launch created the parent run
    address: str | None
    created: float
    launch_id: str = ""  # also the parent run's tag: finds a parent run made by a launch that died before recording it

    def load_spec(self) -> StudySpec:
        # Records written before the effective spec kept the overrides apart: applying them again
        # to an effective spec changes nothing.
        return parse_spec(self.spec, preset=self.preset, name=self.name, overrides=self.overrides)

    def text(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, folder: Path) -> None:
        """Replace the record atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / RECORD_FILE, self.text())

    def claim(self, folder: Path) -> bool:
        """Write the record only if none exists, atomically (a hard link of a complete temporary
        file: it either appears whole or not at all); False when the name is taken."""
        tmp = folder / f".{RECORD_FILE}.{os.getpid()}.claim"
        tmp.write_text(self.text())
        try:
            os.link(tmp, folder / RECORD_FILE)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def read(cls, folder: Path) -> "StudyRecord":
        path = folder / RECORD_FILE
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError; unknown keys a TypeError
            raise RecordError(f"the record {path} is damaged ({type(err).__name__}: {str(err)[:120]}); "
                              "move the folder away to reuse the name") from None


# --- the record as data ----------------------------------------------------------------------------

def label_keys(spec: StudySpec) -> list[str]:
    """The config keys that tell one trial of the study from another (the seed aside): a grid's keys
    that take more than one value across its trials, a search's searched keys."""
    return spec.search.label_keys()


def record_data(spec: StudySpec) -> dict[str, Any]:
    """The record `analysis` reads (RECORD_ARTIFACT): JSON-able data, no prose."""
    data = {"schema": RECORD_SCHEMA, "study": spec.name, "preset": spec.preset, "search": spec.algorithm,
            "objectives": [list(o) for o in spec.objectives], "search_space": spec.search_space_description(),
            "label_keys": label_keys(spec), "fixed": dict(spec.trial), "seeds": list(spec.seeds),
            "total_trials": spec.total_trials(), "select_on_test": spec.select_on_test,
            "scheduler": asdict(spec.scheduler),
            "active_when": rules_data()}
    planned = spec.search.planned()
    if planned is not None:  # a grid's list of trials
        data["trials"] = [{"number": i, "params": point} for i, point in enumerate(planned)]
    if spec.endpoints is not None:
        data[ENDPOINTS_KEY] = spec.endpoints.record(expand_grid(spec.grid), spec.trial, spec.seeds)
    return data


def flat_params(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The effective spec as MLflow params: nested mappings flattened with dots (trial.dataset,
    scheduler.type); lists and search domains as JSON (search.space.beta). A value longer than
    MLflow's limit points to the spec artifact instead. An unset value (None) is no param: the UI
    would show the string 'None'."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping) and prefix != "search.space.":  # a search domain is one value
            out |= flat_params(value, name + ".")
            continue
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        out[name] = text if len(text) <= MAX_PARAM_VAL_LENGTH else f"(long: see {SPEC_ARTIFACT})"
    return out


# --- names people read ---------------------------------------------------------------------------

SHORT_KEYS = {"smooth_labels": "ls", "mollify": "moll"}
BARE_KEYS = ("roles", "augment", "model", "dataset")  # their values name themselves: xnb, fcr+trivaug


def _name_part(key: str, value: Any) -> str:
    if isinstance(value, bool):
        short = SHORT_KEYS.get(key, key)
        return short if value else f"no-{short}"
    if key in BARE_KEYS:
        return str(value)
    if isinstance(value, float):
        return f"{key}={value:.3g}"
    return f"{key}={value}"


def trial_run_name(number: int, values: Mapping[str, Any], keys: Iterable[str]) -> str:
    """`beta=9.2 npow=0.851 xnb s0 #5`: what tells the trial apart first, so that the runs table,
    which cuts names short, shows a difference: the values of the study's `label_keys` that acted
    in this trial (real numbers first, as they differ in every trial of a search), its seed, and its
    number last (also the tag `mollify.trial_number`). `mollify` on is named only when no
    mollification knob says it."""
    shown = [k for k in keys if k in values and is_active(k, values)]
    mollifying = any(MOLLIFYING[0] in ACTIVE_WHEN.get(k, ()) for k in shown)
    shown = [k for k in shown if not (k == "mollify" and values[k] and mollifying)]
    shown.sort(key=lambda k: not isinstance(values[k], float))  # stable: the study's order otherwise
    return " ".join([*(_name_part(k, values[k]) for k in shown), f"s{values.get('seed', 0)}", f"#{number}"])


ROLE_WORDS = {"n": "noise", "b": "blur", "e": "pure noise"}
KEY_WORDS = {"beta": "mollification amount beta", "alpha": "alpha of t ~ Beta(alpha, beta)",
             "npow": "noise label-schedule power npow", "bpow": "blur label-schedule power bpow",
             "smooth_labels": "label smoothing", "label_mode": "label mode", "augment": "augmentation",
             "lr": "learning rate", "sigma_min": "smallest blur sigma", "sigma_max": "largest blur sigma"}


def describe_trial(number: int, values: Mapping[str, Any], keys: Iterable[str], study: str) -> str:
    """A trial run's description (Markdown, shown above its metrics): its arm in words."""
    if not values.get("mollify", True):
        arm = "without mollification"
    else:
        roles = str(values.get("roles", ""))
        arm = "mollified with " + " and ".join(ROLE_WORDS[r] for r in roles if r in ROLE_WORDS) + f" (`{roles}`)"
    shown = [k for k in keys if k in values and is_active(k, values) and k not in ("mollify", "roles")]
    words = [f"{KEY_WORDS.get(k, k)} {_word_value(values[k])}" for k in shown]
    return (f"Trial {number} of study **{study}**: {arm}" + (f"; {', '.join(words)}" if words else "")
            + f"; seed {values.get('seed', 0)}. Every setting: `{CONFIG_ARTIFACT}`.")


def _word_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def ui_link(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where the MLflow UI shows the experiment's runs table (or one run). The UI opens an
    experiment on its GenAI traces page unless asked for the machine-learning view. A SQLite store
    has no server: the link is for `mlflow ui --backend-store-uri <uri>` on its default port."""
    base = safe_uri(tracking_uri) if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    path = f"/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}{path}?workflowType=machine_learning"


# --- the MLflow parent run -------------------------------------------------------------------------

def find_parent_run(client: MlflowClient, experiment_id: str, launch_id: str) -> str | None:
    """The parent run a launch created, by its launch id (a launch killed between creating it and
    recording it leaves one the record does not name)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{LAUNCH_TAG}` = '{launch_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def start_parent_run(spec: StudySpec, tracking_uri: str, launch_id: str = "") -> str:
    """Create the study's parent run with its tags, params, spec and record."""
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, spec.name)
    tags = {KIND_TAG: "study", STUDY_TAG: spec.name, PRESET_TAG: spec.preset, SEARCH_TAG: spec.algorithm,
            OBJECTIVES_TAG: json.dumps([list(o) for o in spec.objectives]),
            TOTAL_TRIALS_TAG: str(spec.total_trials()), SELECT_ON_TEST_TAG: str(spec.select_on_test).lower(),
            GIT_COMMIT_TAG: git_commit(), DESCRIPTION_TAG: describe_study(spec), STATE_TAG: "running",
            LAUNCH_TAG: launch_id}
    run_id = client.create_run(experiment_id, run_name=spec.name, tags=tags).info.run_id
    effective = spec.effective()
    params = [Param(k, v) for k, v in flat_params(effective).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_text(run_id, yaml.safe_dump(effective, sort_keys=False), SPEC_ARTIFACT)
    client.log_dict(run_id, record_data(spec), RECORD_ARTIFACT)
    return run_id


PARENT_STATUS = {"finished": RunStatus.FINISHED, "failed": RunStatus.FAILED, "interrupted": RunStatus.KILLED}


def set_parent_state(tracking_uri: str, run_id: str, state: str) -> None:
    """The parent run says where the study stands: FINISHED only when every trial ended, FAILED
    when some failed, KILLED when the driver was interrupted (resumable: `resume` sets it RUNNING
    again); the tag `mollify.state` says it in words."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, STATE_TAG, state)
    if state == "running":
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    else:
        client.set_terminated(run_id, RunStatus.to_string(PARENT_STATUS[state]))


def trial_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    return client.search_runs([experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'trial'", max_results=10_000)


@dataclass(frozen=True)
class Tally:
    """Where a study stands, from its MLflow trial runs."""

    finished: int
    running: int
    failed: int
    stopped_early: int
    best: Run | None  # the best FINISHED run by the first objective

    @property
    def ended(self) -> int:
        return self.finished + self.failed + self.stopped_early


def tally(runs: list[Run], objective: tuple[str, str]) -> Tally:
    counts = {s: sum(r.info.status == s for r in runs) for s in ("FINISHED", "RUNNING", "FAILED", "KILLED")}
    stopped = sum(r.data.tags.get(STOPPED_EARLY_TAG) == "true" for r in runs)
    metric, mode = objective
    scored = [r for r in runs if r.info.status == "FINISHED" and metric in r.data.metrics]
    best = (min if mode == "min" else max)(scored, key=lambda r: r.data.metrics[metric], default=None)
    return Tally(counts["FINISHED"], counts["RUNNING"], counts["FAILED"] + counts["KILLED"] - stopped,
                    stopped, best)


def describe_study(spec: StudySpec, state: Tally | None = None) -> str:
    """The parent run's description (Markdown): data, setting, search, and the best trial so far."""
    t = {**TrialConfig().to_dict(), **spec.trial}
    data = ", ".join(str(x) for x in (t["dataset"], t["num_classes"] and f"{t['num_classes']} classes",
                                     t["image_size"] and f"{t['image_size']} px") if x)
    metric, mode = spec.objectives[0]
    varied = ", ".join(label_keys(spec)) or "nothing"
    lines = [f"**{spec.name}** (preset `{spec.preset}`): {data}; {t['model']}, {t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}, "
             f"augmentation {t['augment']}.",
             f"Search: {spec.algorithm} over {varied}; {spec.total_trials()} trials; "
             f"{'selects on' if spec.search.selects else 'reports'} {metric} ({mode}).",
             f"Effective spec: `{SPEC_ARTIFACT}`; figures: `figures/report.html` (written when the study ends).",
             "Runs table: under **Columns**, show " + ", ".join(f"`{m}`" for m in table_columns(spec))
             + "; each trial's **Model metrics** tab charts its epochs, and `corrupt/cells.json` holds its "
             "corruption x severity grid."]
    if state is not None:
        lines.append(f"Trials: {state.finished} finished, {state.failed} failed, {state.stopped_early} stopped "
                     f"early, of {spec.total_trials()}.")
        if state.best is not None:
            value = state.best.data.metrics[metric]
            lines.append(f"Best {metric} so far: {value:.4g}, trial run `{state.best.info.run_name}`.")
    return "\n\n".join(lines)


def table_columns(spec: StudySpec) -> list[str]:
    """The metrics to show in the runs table: the objectives, then clean and corrupted error and ECE."""
    return list(dict.fromkeys([*(m for m, _ in spec.objectives), "clean/error", "corrupt/error", "corrupt/ece"]))


def update_parent(spec: StudySpec, tracking_uri: str, parent_run_id: str) -> Tally:
    """Log where the study stands into its parent run: counts and the best objective so far as
    metrics (step: the number of trials ended), and the description."""
    client = MlflowClient(tracking_uri)
    state = tally(trial_runs(client, ensure_experiment(client, spec.name)), spec.objectives[0])
    now = int(time.time() * 1000)
    values = dict(zip(COUNT_METRICS, (state.finished, state.failed, state.stopped_early)))
    if state.best is not None:
        metric = spec.objectives[0][0]
        values[BEST_PREFIX + metric] = state.best.data.metrics[metric]
    client.log_batch(parent_run_id, metrics=[Metric(k, float(v), now, state.ended) for k, v in values.items()])
    client.set_tag(parent_run_id, DESCRIPTION_TAG, describe_study(spec, state))
    return state


# --- Optuna --------------------------------------------------------------------------------------

def optuna_study_attrs(spec: StudySpec, tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """User attributes of a search's Optuna study: where its MLflow record is."""
    return {"mollify.preset": spec.preset, "mlflow.experiment": spec.name, "mlflow.parent_run_id": parent_run_id,
            "mlflow.tracking_uri": safe_uri(tracking_uri)}


IMPORTANCE_TRIALS = 10  # under this many trials per key, parameter importances are indicative only


def optuna_study_note(spec: StudySpec, tracking_uri: str, parent_run_id: str) -> str:
    """optuna-dashboard's note on the study (Markdown): where its MLflow record is, and how far to
    trust the importances the dashboard shows."""
    experiment_id = MlflowClient(tracking_uri).get_run(parent_run_id).info.experiment_id
    n = spec.total_trials()
    space = spec.search_space_description()
    # conditional: acting only under some values of another searched key (npow: roles with noise)
    conditional = [k for k, d in space.items() if any(c["key"] in space for c in d.get("active_when", ()))]
    lines = [f"## {spec.name}", f"MLflow: [the study's run]({ui_link(tracking_uri, experiment_id, parent_run_id)}), "
             f"[its trials]({ui_link(tracking_uri, experiment_id)})" + _served_by(tracking_uri) + "; each trial's "
             "note links its run.",
             f"**Parameter importances**: this study has {n} trials. "
             + (f"Under {IMPORTANCE_TRIALS} trials per key they are indicative only. " if n < IMPORTANCE_TRIALS else "")
             + (f"The dashboard computes those of conditional keys ({', '.join(conditional)}) on the trials that hold "
                "every key; the study's own figure (`figures/report.html`) on the trials where each acted, so the two "
                "can disagree." if conditional else "")]
    return "\n\n".join(lines)


def trial_note(run: Run, tracking_uri: str) -> str:
    """optuna-dashboard's note on a trial: its MLflow run, as a link."""
    url = ui_link(tracking_uri, run.info.experiment_id, run.info.run_id)
    return f"MLflow run: [{run.info.run_name}]({url}){_served_by(tracking_uri)}"


def _served_by(tracking_uri: str) -> str:
    """A SQLite store has no server: the links are for `mlflow ui` on its default port."""
    return "" if tracking_uri.startswith("http") else f" (with `mlflow ui --backend-store-uri {safe_uri(tracking_uri)}` running)"


def save_dashboard_note(study_or_trial: Any, body: str) -> None:
    """Put `body` in optuna-dashboard's note of a study or live trial, where optuna-dashboard is
    installed (the `dashboard` extra); an equal note is left as it is (each save is a new version)."""
    try:
        from optuna_dashboard import get_note, save_note  # noqa: PLC0415 (optional: the dashboard extra)
    except ImportError:
        return
    if get_note(study_or_trial) != body:
        save_note(study_or_trial, body)

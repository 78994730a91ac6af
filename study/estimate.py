"""What a study will cost before it runs: `python -m study estimate PRESET|SPEC.yaml`, and the same
estimate printed by `launch` before the first trial, stored beside the study's record and on its
parent run, compared with the actual times when the study ends and by `study status` meanwhile.

Method: every trial shape (the cost-relevant part of a trial's config: model, data and its size,
image size, batch, augmentation, mollification, JSD, evaluation and corruption grid; see
study/calibrate.py) is calibrated on the local device: a few timed training steps and one batch of
each evaluation. That is extrapolated to the trial's epochs, evaluated epochs and final corruption
grid, plus a platform overhead per trial; the trials are then placed as Ray would place them on the
given resources (study/placement.py) to give the wall time. What is measured, what is assumed and
how noisy the measurement was are part of the estimate; figures are rounded to two digits.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from study.calibrate import COST_FREE, Calibration, Settings, calibrate, shape_key
from study.placement import Demand, Resources, check_fits, simulate
from study.spec import StudySpec
from trainables.config import TrialConfig

# --- assumptions (measured on the 2-core CPU machine by benchmarks/study_overhead.py) ----------------
STARTUP_S = 25.0  # launch -> first trial: the CLI's imports, a local Ray, the first worker (26 s measured)
LAUNCH_ESTIMATE_S = 6.0  # launch's own estimate: a child process, its calibrations read from the cache
WORKER_S = 3.0  # a trial's worker process starting (imports torch, MLflow, the project) before its run
TRIAL_OVERHEAD_S = 2.0  # a trial's MLflow run opened, its metrics and model logged, closed
EPOCH_OVERHEAD_S = 0.1  # one batched MLflow request per epoch
FINISH_S = 5.0  # after the last trial: the parent run updated, Ray shut down
SKIP_ENV = "MOLLIFY_NO_ESTIMATE"  # set to 1: `launch` skips the estimate
ESTIMATE_FILE = "estimate.json"  # in <runs dir>/<name>/, beside study.json
ESTIMATE_SPEC_FILE = "estimate-spec.yaml"  # the effective spec handed to the estimate's child process
ESTIMATE_ARTIFACT = "study/estimate.json"
ESTIMATE_TAG = "mollify.estimate"  # on the parent run: the estimate in one line
EXTRAPOLATED = ("epochs", "eval_every")
OVERHEAD_RANGE = (0.5, 1.5)  # the overheads above were measured once, elsewhere: the range takes them as +-50%  # cost-free for a shape, but the trial's time scales with them


@dataclass(frozen=True)
class ShapeCost:
    """One calibrated shape and the trials (launch order) that have it."""

    shape: dict[str, Any]
    trials: tuple[int, ...]
    calibration: Calibration
    cached: bool


@dataclass
class Estimate:
    study: str
    preset: str
    algorithm: str
    trials: int
    trial_seconds: list[float]  # per trial, launch order, none stopped early
    trial_seconds_range: list[list[float]]  # [fastest, slowest] over the calibration repeats
    first_rung_seconds: list[float] | None  # ASHA: per trial, stopped at its first rung
    device_hours: float
    device_hours_range: list[float]
    wall_seconds: float
    wall_seconds_range: list[float]
    setup_seconds: float  # once, before the first trial: making a corrupted set
    resources: dict[str, Any]
    device: str
    shapes: list[dict[str, Any]]
    measured: list[str]
    assumed: list[str]
    calibration_seconds: float
    made_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- trials and their shapes ----------------------------------------------------------------------

def launch_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """Every trial's config in the order the study runs them (an Optuna search: its fixed part,
    the same for every trial; a searched key that changes the cost is noted in the estimate)."""
    if spec.algorithm == "grid":
        return spec.trial_configs()
    return [{**spec.trial, "seed": spec.seeds[0]} for _ in range(spec.num_samples)]


def searched_cost_keys(spec: StudySpec) -> list[str]:
    """Keys an Optuna search draws that change a trial's cost (the estimate takes the fixed values)."""
    return [k for k in spec.space if k not in COST_FREE or k in EXTRAPOLATED] if spec.algorithm != "grid" else []


def group_shapes(configs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[int]]]:
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, values in enumerate(configs):
        key = json.dumps(shape_key(values), sort_keys=True, default=str)
        groups.setdefault(key, (values, []))[1].append(i)
    return list(groups.values())


def evaluated_epochs(epochs: int, eval_every: int, ran: int) -> int:
    """Epochs evaluated among the first `ran` of `epochs`: every eval_every-th, and the last."""
    return sum(1 for e in range(1, ran + 1) if e % eval_every == 0 or e == epochs)


def trial_seconds(cal: Calibration, epochs: int, eval_every: int, *, ran: int | None = None,
                  step_s: float | None = None, overhead: float = 1.0) -> float:
    """One trial alone on its device, from its worker's start: `ran` epochs of `epochs` (default
    all; fewer: stopped early, no final corruption grid); `overhead` scales the assumed platform
    overheads (the range's ends: OVERHEAD_RANGE)."""
    ran = epochs if ran is None else ran
    step = cal.step_median if step_s is None else step_s
    clean = cal.clean_image_s * (cal.n_test + cal.n_valid)
    valid = cal.valid_image_s * cal.n_valid_corrupt
    per_epoch = cal.steps_per_epoch * step + 2 * cal.checkpoint_s + EPOCH_OVERHEAD_S * overhead  # saved, copied by Ray
    grid = cal.grid_image_s * cal.n_grid if ran == epochs else 0.0
    model_logged = cal.checkpoint_s  # the final network goes to MLflow: about a checkpoint's cost
    return ((WORKER_S + TRIAL_OVERHEAD_S) * overhead + cal.load_s + cal.warmup_s + model_logged + ran * per_epoch
            + evaluated_epochs(epochs, eval_every, ran) * (clean + valid) + grid)


# --- the estimate ---------------------------------------------------------------------------------

def local_resources() -> Resources:
    import torch

    return Resources(cpus=float(os.cpu_count() or 1), gpus=torch.cuda.device_count())


def estimate(spec: StudySpec, resources: Resources | None = None, *, settings: Settings = Settings(),
             use_cache: bool = True, progress: Callable[[str], None] = lambda line: None) -> Estimate:
    resources = resources or local_resources()
    check_fits(Demand(spec.cpus, spec.gpus), resources)  # before any calibration
    configs = launch_configs(spec)
    threads = max(1, int(spec.cpus))
    began = time.perf_counter()
    shapes = []
    for n, (values, trials) in enumerate(group_shapes(configs), 1):
        progress(f"[estimate] calibrating trial shape {n} ({len(trials)} trial{'s' * (len(trials) != 1)})")
        cal, cached = calibrate(values, threads=threads, settings=settings, use_cache=use_cache)
        shapes.append(ShapeCost(shape_key(values), tuple(trials), cal, cached))
    calibration_seconds = time.perf_counter() - began
    return assemble(spec, configs, shapes, resources, calibration_seconds)


def assemble(spec: StudySpec, configs: list[dict[str, Any]], shapes: list[ShapeCost], resources: Resources,
             calibration_seconds: float) -> Estimate:
    """Extrapolate the calibrated shapes to every trial, and place the trials."""
    full, fast, slow, rung = trial_times(spec, configs, {i: s.calibration for s in shapes for i in s.trials})
    setup = setup_seconds(shapes)
    place = lambda work, sharing, k=1.0: (setup + (STARTUP_S + LAUNCH_ESTIMATE_S + FINISH_S) * k + simulate(
        work, Demand(spec.cpus, spec.gpus), resources, max_concurrent=spec.max_concurrent, sharing=sharing).wall)
    low_work = rung or fast  # ASHA: every trial stopped at its first rung
    low_k, high_k = OVERHEAD_RANGE
    central, low, high = place(full, "sliced"), place(low_work, "free", low_k), place(slow, "sliced", high_k)
    # Device hours: a trial's time alone on its device, times the whole GPUs it holds (a fraction
    # of a GPU: the trial is taken to keep the GPU busy), or trial-hours on the CPU.
    hours = lambda work: sum(work) / 3600 * (max(spec.gpus, 1.0) if spec.gpus else 1.0)
    return Estimate(
        study=spec.name, preset=spec.preset, algorithm=spec.algorithm, trials=len(configs),
        trial_seconds=[sig(t) for t in full], trial_seconds_range=[[sig(a), sig(b)] for a, b in zip(fast, slow)],
        first_rung_seconds=[sig(t) for t in rung] if rung else None,
        device_hours=sig(hours(full)), device_hours_range=[sig(hours(low_work)), sig(hours(slow))],
        wall_seconds=sig(central), wall_seconds_range=[sig(min(low, central)), sig(max(high, central))],
        setup_seconds=sig(setup),
        resources={"cpus": resources.cpus, "gpus": resources.gpus, "cpus_per_trial": spec.cpus,
                   "gpus_per_trial": spec.gpus, "max_concurrent": spec.max_concurrent},
        device=shapes[0].calibration.device if shapes else "none", shapes=[describe_shape(s) for s in shapes],
        measured=measured_lines(shapes, calibration_seconds),
        assumed=assumed_lines(spec, shapes, resources), calibration_seconds=round(calibration_seconds, 1))


def trial_times(spec: StudySpec, configs: list[dict[str, Any]],
                cal_of: dict[int, Calibration]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per trial (launch order): the estimate; the range's low end (the fastest timed repeat, the
    overheads at their low end) and high end (the slowest, the overheads high); and (ASHA only, else
    empty) the low end stopped at its first rung."""
    full, fast, slow, rung = [], [], [], []
    (low_k, high_k), asha = OVERHEAD_RANGE, spec.scheduler.type == "asha"
    for i, values in enumerate(configs):
        cfg, cal = TrialConfig.from_dict(values), cal_of[i]
        full.append(trial_seconds(cal, cfg.epochs, cfg.eval_every))
        fast.append(trial_seconds(cal, cfg.epochs, cfg.eval_every, step_s=min(cal.step_s), overhead=low_k))
        slow.append(trial_seconds(cal, cfg.epochs, cfg.eval_every, step_s=max(cal.step_s), overhead=high_k))
        if asha:
            rung.append(trial_seconds(cal, cfg.epochs, cfg.eval_every, step_s=min(cal.step_s), overhead=low_k,
                                      ran=min(spec.scheduler.grace_period, cfg.epochs)))
    return full, fast, slow, rung


SET_KEYS = ("dataset", "data_root", "num_classes", "image_size", "corruption_path", "corruption_protocol",
            "corruption_table", "corruptions", "severities")


def setup_seconds(shapes: list[ShapeCost]) -> float:
    """Making the `auto` corrupted sets that do not exist yet: once per set, before the first trial."""
    sets: dict[str, float] = {}
    for s in shapes:
        c = s.calibration
        key = json.dumps([s.shape.get(k) for k in SET_KEYS], default=str)
        sets[key] = max(sets.get(key, 0.0), c.generate_image_s * c.n_test_full)
    return sum(sets.values())


def sig(x: float, digits: int = 2) -> float:
    """`x` to `digits` significant digits: the estimate's precision, no more."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def noise(cal: Calibration) -> float:
    """The spread of the timed repeats, as a fraction of their median."""
    return (max(cal.step_s) - min(cal.step_s)) / cal.step_median if cal.step_median else 0.0


def describe_shape(s: ShapeCost) -> dict[str, Any]:
    c, v = s.calibration, s.shape
    return {
        "trials": len(s.trials), "cached": s.cached,
        "what": (f"{v['model']}, {v['dataset']} {c.n_train} training images"
                 f"{' at ' + str(v['image_size']) + ' px' if v['image_size'] else ''}, batch {v['batch_size']}, "
                 f"{v['augment']}{', mollified' if v['mollify'] else ''}{', JSD' if v['jsd'] else ''}"
                 f"{', compiled' if v['compile'] else ''}"),
        "step_seconds": sig(c.step_median, 3), "step_seconds_repeats": [sig(t, 3) for t in c.step_s],
        "steps_per_epoch": c.steps_per_epoch, "load_seconds": sig(c.load_s), "warmup_seconds": sig(c.warmup_s),
        "eval_images": c.n_test + c.n_valid, "grid": f"{c.cells} cells x {c.n_grid} images ({c.grid_source})",
        "grid_seconds": sig(c.grid_image_s * c.n_grid), "checkpoint_seconds": sig(c.checkpoint_s),
        "calibration_seconds": round(c.measured_s, 1),
    }


def measured_lines(shapes: list[ShapeCost], seconds: float) -> list[str]:
    cached = sum(s.cached for s in shapes)
    spread = max((noise(s.calibration) for s in shapes), default=0.0)
    c = shapes[0].calibration if shapes else None
    where = f"{c.device}, {c.threads} thread{'s' * (c.threads != 1)}" if c else "nothing"
    return [f"{len(shapes)} trial shape{'s' * (len(shapes) != 1)} calibrated on {where} "
            f"({cached} from the cache; {seconds:.0f} s now): timed training steps, one batch of each evaluation, "
            "one checkpoint written, the data loaded",
            f"training steps varied by up to {100 * spread:.0f}% between timed repeats (part of the ranges); "
            "the corruption grid and the evaluations were timed once"]


def assumed_lines(spec: StudySpec, shapes: list[ShapeCost], resources: Resources) -> list[str]:
    lines = [f"platform overheads measured once on a 2-core CPU machine: {STARTUP_S + LAUNCH_ESTIMATE_S:.0f} s from "
             f"launch to the first trial (launch's own estimate, cached, included), {WORKER_S + TRIAL_OVERHEAD_S:.0f} s per trial (worker start, MLflow run), "
             f"{FINISH_S:.0f} s after the last; each epoch writes one checkpoint and Ray copies it; the range takes "
             f"these as {OVERHEAD_RANGE[0]:g}x to {OVERHEAD_RANGE[1]:g}x",
             f"Ray's placement on one node of {plural(resources.cpus, 'CPU')} and {plural(resources.gpus, 'GPU')}, "
             "launch order, "
             f"{plural(spec.cpus, 'CPU')} and {plural(spec.gpus, 'GPU')} per trial, "
             f"{spec.max_concurrent or 'no limit on'} trials at once; no failures, no retries",
             "the trials run as fast as the calibration ran alone: other load on the machine makes them slower "
             "(Ray runs trials at a lower priority, nice 15, so other work on the machine slows them more than "
             "it slowed the calibration), as do trials contending for memory bandwidth"]
    if 0 < spec.gpus < 1:
        lines.append(f"trials sharing a GPU ({spec.gpus:g} each): the estimate takes them as splitting it evenly; "
                     "the range's low end as each running as fast as alone")
    if spec.gpus and shapes and not shapes[0].calibration.device.startswith("cuda"):
        lines.append("the trials ask for GPUs but this machine calibrated on its CPU: the figures are the CPU's")
    if spec.scheduler.type == "asha":
        lines.append(f"ASHA: between every trial stopped at its first rung ({spec.scheduler.grace_period} "
                     "epochs; the range's low end) and none stopped (the estimate)")
    lines += [f"shape {n}: {s.calibration.stand_in}" for n, s in enumerate(shapes, 1) if s.calibration.stand_in]
    cost_keys = searched_cost_keys(spec)
    if cost_keys:
        lines.append(f"the search draws {', '.join(cost_keys)}, which change the cost: estimated at the "
                     "spec's fixed values and defaults")
    return lines


# --- words ----------------------------------------------------------------------------------------

def duration(seconds: float) -> str:
    """2 significant digits, in the unit people read: 45 s, 12 min, 3.4 h, 2.1 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size if unit != "min" else seconds >= 100:
            return f"{sig(seconds / size):g} {unit}"
    return f"{sig(seconds):g} s"


def plural(n: float, word: str) -> str:
    return f"{n:g} {word}{'' if n == 1 else 's'}"


def render(est: Estimate) -> list[str]:
    per = sorted(set(est.trial_seconds))
    trial = duration(per[0]) if len(per) == 1 else f"{duration(per[0])} to {duration(per[-1])}"
    hours = "GPU-hours" if est.device.startswith("cuda") else "trial-hours on the CPU"
    r = est.resources
    lines = [f"[estimate] {est.study}: {est.trials} trials of about {trial} each on {est.device}; "
             f"{est.device_hours:g} {hours} ({est.device_hours_range[0]:g} to {est.device_hours_range[1]:g})",
             f"[estimate] wall time on {plural(r['cpus'], 'CPU')} and {plural(r['gpus'], 'GPU')}: about {duration(est.wall_seconds)} "
             f"(range {duration(est.wall_seconds_range[0])} to {duration(est.wall_seconds_range[1])})"]
    if est.first_rung_seconds:
        lines.append(f"[estimate] ASHA: {duration(est.wall_seconds_range[0])} if every trial stops at its first "
                     f"rung, {duration(est.wall_seconds)} if none does")
    if est.setup_seconds:
        lines.append(f"[estimate] first the study makes its corrupted set: about {duration(est.setup_seconds)}")
    for n, s in enumerate(est.shapes, 1):
        lines.append(f"[estimate]   shape {n} ({plural(s['trials'], 'trial')}): {s['what']}; {s['steps_per_epoch']} steps "
                     f"per epoch at {s['step_seconds']:g} s; corruption grid {s['grid']}: {duration(s['grid_seconds'])}")
    lines += [f"[estimate] measured: {line}" for line in est.measured]
    lines += [f"[estimate] assumed: {line}" for line in est.assumed]
    return lines


def summary(est: Estimate) -> str:
    return (f"{est.trials} trials, {est.device_hours:g} device-hours, wall {duration(est.wall_seconds)} "
            f"({duration(est.wall_seconds_range[0])}-{duration(est.wall_seconds_range[1])}) on {est.device}")

"""`study estimate`: Ray's placement simulated on synthetic durations against schedules computed by
hand, the extrapolation arithmetic, a real calibration of a tiny shape (cached the second time),
the CLI's JSON, and the estimate stored at launch and compared with the actual times at the end."""

from __future__ import annotations

import json
import time

import pytest

from study import estimate_record
from study.__main__ import main
from study.calibrate import COST_FREE, Calibration, Settings, calibrate, shape_key
from study.estimate import (LAUNCH_ESTIMATE_S, STARTUP_S, FINISH_S, ShapeCost, assemble, duration, evaluated_epochs, launch_configs,
                            sig, trial_seconds)
from study.placement import Demand, PlacementError, Resources, simulate
from study.spec import load_spec, parse_spec

# --- the placement, by hand ------------------------------------------------------------------------


def test_cpu_trials_fill_free_cpus_in_launch_order():
    # 2 CPUs, 1 per trial: A(4) and B(3) start at 0; B ends at 3 and C(2) takes its CPU until 5;
    # A ends at 4 and D(5) runs 4..9.
    s = simulate([4, 3, 2, 5], Demand(cpus=1), Resources(cpus=2))
    assert s.start == (0, 0, 3, 4) and s.end == (4, 3, 5, 9) and s.wall == 9


def test_max_concurrent_holds_trials_back_though_cpus_are_free():
    s = simulate([4, 3, 2, 5], Demand(cpus=1), Resources(cpus=4), max_concurrent=1)
    assert s.start == (0, 4, 7, 9) and s.end == (4, 7, 9, 14)


def test_a_trial_that_does_not_fit_holds_back_those_after_it():
    # 3 CPUs, 2 per trial: only one runs at a time although 1 CPU stays free.
    s = simulate([1, 1, 1], Demand(cpus=2), Resources(cpus=3))
    assert s.end == (1, 2, 3)


def test_fractional_gpus_share_one_gpu_sliced_or_free():
    # Half a GPU each on one GPU: A(2) and B(3) share it. Sliced: each at half speed until A has
    # done its 2 s at t=4 (B has done 2 of 3); C(2) starts at 4 beside B, both at half speed: B ends
    # at 6, C has done 1 by then and ends alone at 7. Free: as if each had the GPU to itself.
    s = simulate([2, 3, 2], Demand(cpus=1, gpus=0.5), Resources(cpus=8, gpus=1))
    assert s.start == (0, 0, 4) and s.end == pytest.approx((4, 6, 7))
    free = simulate([2, 3, 2], Demand(cpus=1, gpus=0.5), Resources(cpus=8, gpus=1), sharing="free")
    assert free.start == (0, 0, 2) and free.end == (2, 3, 4)


def test_a_gpu_fraction_is_packed_onto_one_gpu_first_fit():
    # 0.6 of a GPU: two never fit on one GPU, so two GPUs run two trials, each alone at full speed.
    s = simulate([3, 3, 3], Demand(cpus=1, gpus=0.6), Resources(cpus=8, gpus=2))
    assert s.start == (0, 0, 3) and s.end == (3, 3, 6)


def test_whole_gpus_are_not_shared():
    s = simulate([5, 5, 5], Demand(cpus=1, gpus=2), Resources(cpus=8, gpus=3))
    assert s.end == (5, 10, 15)


@pytest.mark.parametrize("demand, resources", [(Demand(cpus=4), Resources(cpus=2)),
                                               (Demand(cpus=1, gpus=1), Resources(cpus=2, gpus=0)),
                                               (Demand(cpus=1, gpus=1.5), Resources(cpus=2, gpus=4))])
def test_a_trial_larger_than_the_resources_is_refused(demand, resources):
    with pytest.raises(PlacementError):
        simulate([1.0], demand, resources)


# --- the extrapolation ---------------------------------------------------------------------------

def fake_calibration(**changes) -> Calibration:
    values = dict(device="cpu", threads=1, load_s=1.0, warmup_s=0.5, step_s=(0.1, 0.1, 0.1), checkpoint_s=0.0,
                  clean_image_s=0.001, valid_image_s=0.0, grid_image_s=0.01, generate_image_s=0.0,
                  grid_source="on_the_fly", n_train=1000, n_valid=0, n_valid_corrupt=0, n_test=500, n_test_full=500,
                  n_grid=100, cells=75, steps_per_epoch=10, measured_s=1.0)
    return Calibration(**{**values, **changes})


def test_evaluated_epochs_are_every_nth_and_the_last():
    assert evaluated_epochs(10, 3, 10) == 4  # 3, 6, 9, 10
    assert evaluated_epochs(10, 3, 5) == 1  # stopped after 5: only 3
    assert evaluated_epochs(4, 1, 4) == 4


def test_trial_seconds_add_up_by_hand():
    cal = fake_calibration()
    # worker 3 + run 2 + load 1 + warm-up 0.5 + first checkpoint 0 + 4 epochs x (10 steps x 0.1 + 0.1)
    # + 4 evaluations x 500 images x 0.001 + grid 100 x 0.01
    assert trial_seconds(cal, epochs=4, eval_every=1) == pytest.approx(3 + 2 + 1 + 0.5 + 4 * 1.1 + 4 * 0.5 + 1)
    # stopped after 2 of 4 epochs: no final grid
    assert trial_seconds(cal, epochs=4, eval_every=1, ran=2) == pytest.approx(3 + 2 + 1 + 0.5 + 2 * 1.1 + 2 * 0.5)


def test_asha_gives_a_range_from_first_rung_to_none_stopped():
    spec = parse_spec({"trial": {"epochs": 9, "valid_per_class": 2}, "search": {
        "algorithm": "tpe", "num_samples": 4, "space": {"beta": {"low": 1, "high": 4}}},
        "scheduler": {"type": "asha", "metric": "valid/error", "grace_period": 1}, "max_concurrent": 2})
    configs = launch_configs(spec)
    shape = ShapeCost(shape_key(configs[0]), (0, 1, 2, 3), fake_calibration(), False)
    est = assemble(spec, configs, [shape], Resources(cpus=2), 0.0)
    assert est.trials == 4 and len(est.trial_seconds) == 4 and est.first_rung_seconds is not None
    full = trial_seconds(shape.calibration, 9, 1)
    assert est.trial_seconds == [sig(full)] * 4
    assert est.wall_seconds == sig(STARTUP_S + LAUNCH_ESTIMATE_S + 2 * full + FINISH_S)  # 2 rounds of 2
    assert est.wall_seconds_range[0] < est.wall_seconds and est.device_hours == sig(4 * full / 3600)
    assert any("ASHA" in line for line in est.assumed)


def test_estimates_are_rounded_to_two_digits():
    assert sig(123.456) == 120 and sig(0.012345) == 0.012 and sig(9.96) == 10
    assert duration(45) == "45 s" and duration(754) == "13 min" and duration(3 * 3600) == "3 h"


def test_trials_differing_only_in_what_costs_nothing_are_one_shape():
    spec = load_spec("quickstart")
    shapes = {json.dumps(shape_key(c), sort_keys=True) for c in spec.trial_configs()}
    assert len(shapes) == 2  # mollify off, mollify on (roles and beta cost the same)
    assert {"epochs", "seed", "roles", "beta"} <= set(COST_FREE)


# --- a real calibration, the CLI -------------------------------------------------------------------

TINY = {"dataset": "synthetic", "train_size": 256, "model": "smallcnn", "epochs": 2, "batch_size": 32,
        "limit_eval_images": 64, "corruptions": "gaussian_noise", "severities": "1,2", "device": "cpu"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_calibration_measures_and_is_cached(cache):
    settings = Settings(steps=2, repeats=2, warmup=1)
    cal, cached = calibrate(TINY, threads=1, settings=settings)
    assert not cached and cal.n_train == 256 and cal.steps_per_epoch == 8 and len(cal.step_s) == 2
    assert all(t > 0 for t in cal.step_s) and cal.cells == 2 and cal.n_grid == 64 and cal.grid_image_s > 0
    again, cached = calibrate({**TINY, "seed": 3, "lr": 0.2}, threads=1, settings=settings)
    assert cached and again == cal
    other, cached = calibrate({**TINY, "batch_size": 64}, threads=1, settings=settings)
    assert not cached and other.steps_per_epoch == 4


def test_estimate_json_for_scripts(cache, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps({"name": "tiny", "trial": TINY, "seeds": [0, 1, 2], "max_concurrent": 2,
                                "search": {"algorithm": "grid", "grid": [{"mollify": [False, True]}]}}))
    assert main(["estimate", str(path), "--cpus", "2", "--gpus", "0", "--steps", "2", "--repeats", "2",
                 "--set", "epochs=3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 6 and len(out["trial_seconds"]) == 6 and len(out["shapes"]) == 2
    assert out["resources"]["cpus"] == 2 and out["device_hours"] > 0
    # 6 trials, 2 at a time, 3 rounds: the wall time is at least the startup and the longest 3 trials
    assert out["wall_seconds"] >= STARTUP_S + sum(sorted(out["trial_seconds"])[-3:]) * 0.9
    assert out["wall_seconds_range"][0] <= out["wall_seconds"] <= out["wall_seconds_range"][1]
    assert out["measured"] and out["assumed"]


# --- in a study's life ---------------------------------------------------------------------------

@pytest.mark.slow
def test_the_estimate_is_stored_at_launch_and_compared_at_the_end(cache, tmp_path):
    from mlflow.tracking import MlflowClient

    from study.record import KIND_TAG, TRIAL_NUMBER_TAG, StudyRecord, start_parent_run

    spec = parse_spec({"name": "est", "trial": TINY, "seeds": [0, 1], "max_concurrent": 1,
                       "search": {"algorithm": "grid", "grid": [{"mollify": [True]}]}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = start_parent_run(spec, uri)
    rec = StudyRecord(name="est", preset="custom", spec=spec.effective(), overrides={}, tracking_uri=uri,
                      optuna_storage="", parent_run_id=parent, address=None, created=time.time())
    folder = tmp_path / "runs" / "est"
    folder.mkdir(parents=True)
    estimate_record.at_launch(spec, rec, folder, {"CPU": 2.0})
    stored = json.loads((folder / "estimate.json").read_text())
    assert stored["estimate"]["trials"] == 2 and stored["actual"] is None
    client = MlflowClient(uri)
    assert "trials" in client.get_run(parent).data.tags[estimate_record.ESTIMATE_TAG]
    experiment = client.get_experiment_by_name("est").experiment_id
    done = client.create_run(experiment, tags={KIND_TAG: "trial", TRIAL_NUMBER_TAG: "0"})
    client.set_terminated(done.info.run_id, "FINISHED")
    client.create_run(experiment, tags={KIND_TAG: "trial", TRIAL_NUMBER_TAG: "1"})  # still running
    live = estimate_record.progress(rec, folder)
    assert live["ended"] == 1 and live["left_s"] > 0 and live["estimated_wall_s"] == stored["estimate"]["wall_seconds"]
    assert "left" in estimate_record.status_line({"estimate": live})
    estimate_record.at_end(spec, rec, folder)
    ended = json.loads((folder / "estimate.json").read_text())
    assert ended["actual"]["wall_seconds"] > 0 and [t["number"] for t in ended["actual"]["trials"]] == [0, 1]
    metrics = client.get_run(parent).data.metrics
    assert {"estimate/wall_s", "actual/wall_s"} <= set(metrics)
    assert "took" in estimate_record.status_line({"estimate": estimate_record.progress(rec, folder)})


def test_a_dataset_not_here_is_timed_on_synthetic_images_of_its_official_size(cache, tmp_path):
    values = {**TINY, "dataset": "cifar100", "data_root": str(tmp_path / "nothing"), "train_size": None}
    cal, _ = calibrate(values, threads=1, settings=Settings(steps=1, repeats=1, warmup=1))
    assert cal.n_train == 50_000 and cal.steps_per_epoch == 50_000 // 32 and cal.n_test_full == 10_000
    assert cal.n_test == 64 and "cifar100 is not under" in cal.stand_in and "100 classes" in cal.stand_in


def test_resources_too_small_for_one_trial_fail_before_any_calibration(monkeypatch):
    import study.estimate as est

    monkeypatch.setattr(est, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    spec = parse_spec({"trial": TINY, "resources": {"cpus": 4}, "search": {"algorithm": "grid",
                                                                            "grid": [{"mollify": [True]}]}})
    with pytest.raises(PlacementError, match="4 CPUs"):
        est.estimate(spec, Resources(cpus=2))


def test_a_corrupted_set_shared_by_shapes_is_made_once():
    from study.estimate import setup_seconds

    spec = load_spec("quickstart")
    shapes = [ShapeCost(shape_key(c), (i,), fake_calibration(generate_image_s=0.01, n_test_full=1000), False)
              for i, c in enumerate(spec.trial_configs()[:2])]  # mollify off, on: one dataset, one set
    assert shape_key(spec.trial_configs()[0]) != shape_key(spec.trial_configs()[1])
    assert setup_seconds(shapes) == pytest.approx(10.0)


def test_the_cli_says_when_the_resources_cannot_hold_a_trial(capsys):
    assert main(["estimate", "paper-type", "--cpus", "8", "--gpus", "0"]) == 2
    assert "asks for 1 GPU" in capsys.readouterr().err


def test_status_prints_the_estimate_beside_the_time_so_far(capsys):
    from study.__main__ import print_status
    from study.launch import Status

    info = Status(name="s", preset="smoke", algorithm="tpe", state="running", total=4, finished=1,
                  stopped_early=0, failed=0, running=2, interrupted=0, never_started=1, parent_status="RUNNING",
                  best=None, tracking_uri="sqlite:///x.db", runs_link="http://127.0.0.1:5000")
    print_status(info, {"estimated_wall_s": 600.0, "elapsed_s": 200.0, "ended": 1, "ratio": 1.2, "left_s": 480.0})
    assert "estimate: 10 min in all, 3.3 min so far; ended trials took x1.2 their estimate; about 8 min left" \
        in capsys.readouterr().out

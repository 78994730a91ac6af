"""Every spec value checked before Ray starts (issue 16): values that Ray or Optuna would refuse (or
quietly change) only after a launch claimed the name, started the MLflow parent run and created the
Optuna study are refused by `parse_spec`, or by the launch's data check, in one line naming the key
and what is valid, and the refused launch leaves nothing behind. No test here starts Ray."""

from __future__ import annotations

import pytest
import ray
import yaml

from helpers import TINY_TRAIN_COUNTS, make_tiny_tree
from study.__main__ import main
from study.guards import StudyError, check_holdouts
from study.spec import SpecError, StudySpec, parse_spec, read_source
from trainables.__main__ import main as trial_main
from trainables.config import ConfigError, TrialConfig

GRID = {"algorithm": "grid", "grid": [{"beta": [2]}]}
TPE = {"algorithm": "tpe", "num_samples": 3, "space": {"beta": [2, 4]}}


def spec_with(search: dict | None = None, **top) -> dict:
    """A valid spec (synthetic data, a validation split, 10 epochs) with `top` keys changed."""
    return {"trial": {"dataset": "synthetic", "valid_per_class": 4, "epochs": 10}, "search": search or GRID, **top}


# --- values refused at parse time --------------------------------------------------------------

COUNT_RANGES = {"max_concurrent": "must be an integer >= 0", "search.num_samples": "must be an integer >= 1",
                "max_failures": "must be an integer >= 0", "scheduler.grace_period": "must be an integer >= 1",
                "scheduler.reduction_factor": "must be an integer >= 2"}


@pytest.mark.parametrize(("key", "raw"), [
    ("max_concurrent", spec_with(max_concurrent=-1)),
    ("max_concurrent", spec_with(max_concurrent=1.5)),
    ("max_concurrent", spec_with(max_concurrent=True)),
    ("search.num_samples", spec_with({**TPE, "num_samples": 2.7})),  # used to run 2 trials
    ("search.num_samples", spec_with({**TPE, "num_samples": 0})),
    ("search.num_samples", spec_with({**TPE, "num_samples": -1})),
    ("search.num_samples", spec_with({**TPE, "num_samples": True})),
    ("max_failures", spec_with(max_failures=-1)),
    ("scheduler.grace_period", spec_with(scheduler={"type": "asha", "grace_period": 0})),
    ("scheduler.grace_period", spec_with(scheduler={"type": "asha", "grace_period": -2})),
    ("scheduler.reduction_factor", spec_with(scheduler={"type": "asha", "reduction_factor": 1})),
    ("scheduler.reduction_factor", spec_with(scheduler={"type": "asha", "reduction_factor": 0})),
    ("scheduler.reduction_factor", spec_with(scheduler={"type": "asha", "reduction_factor": 2.5})),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_count_out_of_range_is_refused_naming_the_key_and_its_range(key, raw):
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    message = str(caught.value)
    assert message.startswith(f"{key} {COUNT_RANGES[key]}") and "\n" not in message


@pytest.mark.parametrize(("raw", "says"), [
    (spec_with(scheduler={"type": "asha", "grace_period": 11}),
     "scheduler.grace_period 11 exceeds the longest trial's epochs (10), ASHA's max_t: valid 1..10"),
    (spec_with(resources={"cpus": 0}), "resources.cpus must be > 0"),
    (spec_with(resources={"cpus": -1}), "resources.cpus must be > 0"),
    (spec_with(resources={"cpus": True}), "resources.cpus must be a number"),
    (spec_with(resources={"gpus": -0.5}), "resources.gpus must be 0, a fraction below 1 (trials share a GPU) or a "
                                          "whole number, got -0.5"),
    (spec_with(resources={"gpus": 1.5}), "resources.gpus must be 0, a fraction below 1"),
    (spec_with(seeds=[0, True]), "seeds must be a non-empty list of integers"),
    (spec_with(seeds=[2**64]), f"seeds: seed {2**64} is outside {-2**63}..{2**64 - 1}, what torch.manual_seed takes"),
    (spec_with(TPE, seeds=[-1]), "seeds: seed -1 is outside 0..4294967295, what Optuna's samplers take"),
    (spec_with(TPE, seeds=[2**32]), "seeds: seed 4294967296 is outside 0..4294967295"),
    ({"trial": {"dataset": "synthetic", "valid_per_class": 4, "seed": -1}, "search": TPE},
     "trial.seed: seed -1 is outside 0..4294967295"),
    (spec_with({**TPE, "space": {"batch_size": {"type": "int", "low": 1.5, "high": 64}}}),
     "search.space.batch_size: an int domain needs integer low and high, got 1.5, 64"),
    (spec_with({**TPE, "space": {"augment": [["fcr"], ["fcr", "augmix"]]}}),
     "search.space.augment: choice ['fcr'] is not a scalar; valid: null, true/false, numbers, strings"),
    (spec_with({**TPE, "space": {"beta": {"low": True, "high": 4}}}), "needs numeric 'low' and 'high'"),
])
def test_values_ray_or_optuna_would_refuse_later_are_refused_now(raw, says):
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("raw", "field", "value"), [
    (spec_with(), "max_concurrent", 0),  # absent: no limit
    (spec_with(max_concurrent=0), "max_concurrent", 0),
    (spec_with(max_concurrent=3.0), "max_concurrent", 3),
    (spec_with({**TPE, "num_samples": 3}), "num_samples", 3),
    (spec_with({**TPE, "num_samples": 3.0}), "num_samples", 3),
    (spec_with(max_failures=0), "max_failures", 0),
    (spec_with(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}), "scheduler", (1, 2)),
    (spec_with(scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 3}), "scheduler", (10, 3)),
    (spec_with(resources={"cpus": 0.5, "gpus": 0.25}), "resources", (0.5, 0.25)),
    (spec_with(resources={"cpus": 2.5, "gpus": 2}), "resources", (2.5, 2.0)),
    (spec_with(seeds=[-1, 2**40]), "seeds", (-1, 2**40)),  # torch takes them
    (spec_with(TPE, seeds=[2**32 - 1]), "seeds", (2**32 - 1,)),
])
def test_valid_edge_values_parse(raw, field, value):
    spec = parse_spec(raw)
    got = getattr(spec, field)
    if field == "scheduler":
        got = (got.grace_period, got.reduction_factor)
    if field == "resources":
        got = (got.cpus, got.gpus)
    assert got == value


def test_an_int_domain_on_a_log_scale_starting_at_1_parses():
    spec = parse_spec(spec_with({**TPE, "space": {"batch_size": {"type": "int", "low": 1, "high": 64, "log": True}}}))
    assert spec.space["batch_size"].ends() == (1, 64)


# --- a key given twice in a YAML file ---------------------------------------------------------------

def test_a_key_given_twice_in_a_spec_file_is_refused_naming_it_and_its_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("trial:\n  dataset: synthetic\n  beta: 2\n  beta: 9\nsearch: {algorithm: grid}\n")
    with pytest.raises(SpecError, match=r"twice.yaml: not valid YAML: key 'beta' is given twice \(lines 3 and 4\)"):
        read_source(str(path))


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {beta: 2, alpha: 1}\ntrial:\n  <<: *b\n  beta: 9\n")
    raw, _ = read_source(str(path))
    assert raw["trial"] == {"beta": 9, "alpha": 1}


def test_a_key_given_twice_in_a_trial_config_is_refused_by_the_trial_cli(tmp_path, capsys):
    path = tmp_path / "trial.yaml"
    path.write_text("epochs: 1\nlr: 0.1\nepochs: 50\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' is given twice \(lines 1 and 3\)"):
        TrialConfig.from_yaml(path)
    code = trial_main(["run", "--config", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "key 'epochs' is given twice (lines 1 and 3)" in err
    assert not (tmp_path / "m.db").exists()


# --- valid_per_class against the data ----------------------------------------------------------------

def holdout_spec(**trial) -> StudySpec:
    return parse_spec({"trial": {"dataset": "synthetic", **trial}, "search": GRID})


def test_a_validation_split_larger_than_the_data_allows_is_refused_before_any_trial():
    """train_size 100 over 10 classes: 10 images a class, so at most 9 held out leaves one to train on."""
    check_holdouts(holdout_spec(train_size=100, valid_per_class=9))
    with pytest.raises(StudyError) as caught:
        check_holdouts(holdout_spec(train_size=100, valid_per_class=10))
    message = str(caught.value)
    assert message.startswith("valid_per_class 10 on synthetic (data): cannot hold out 10 validation images per class")
    assert "(at most 9 per class leaves every class one to train on; the training split has 10 images per class)" \
        in message


def test_every_configuration_of_a_grid_is_checked_with_its_own_classes():
    """num_classes 50 of 100 images leaves 2 a class: the second grid point's valid_per_class 2 is too many."""
    spec = parse_spec({"trial": {"dataset": "synthetic", "train_size": 100, "valid_per_class": 2},
                       "search": {"algorithm": "grid", "grid": [{"num_classes": [10, 50]}]}})
    with pytest.raises(StudyError, match=r"the training split has 2 images per class"):
        check_holdouts(spec)


def test_an_optuna_search_is_checked_at_the_top_of_its_valid_per_class_domain():
    spec = parse_spec({"trial": {"dataset": "synthetic", "train_size": 100}, "search": {
        "algorithm": "tpe", "num_samples": 2, "space": {"valid_per_class": {"type": "int", "low": 1, "high": 12}}}})
    with pytest.raises(StudyError, match=r"^valid_per_class 12 on synthetic .*at most 9 per class"):
        check_holdouts(spec)


def test_tiny_imagenet_is_counted_from_its_folders(tmp_path):
    """The tree's classes hold 3, 3, 2, 3 training images: valid_per_class 2 leaves 'bullfrog' none."""
    root = make_tiny_tree(tmp_path / "data")
    assert min(TINY_TRAIN_COUNTS) == 2
    check_holdouts(holdout_spec(dataset="tinyimagenet", data_root=str(root), valid_per_class=1))
    with pytest.raises(StudyError, match=r"'bullfrog' \(2\) have no more .*at most 1 per class .* has 2 to 3 images"):
        check_holdouts(holdout_spec(dataset="tinyimagenet", data_root=str(root), valid_per_class=2))


# --- a refused launch leaves nothing ---------------------------------------------------------------

LAUNCH_SPEC = {"name": "refused", "search": GRID,
               "trial": {"dataset": "synthetic", "train_size": 100, "epochs": 1, "valid_per_class": 2,
                         "corruption_source": "none"}}


@pytest.mark.parametrize(("spec_text", "args", "says"), [
    (yaml.safe_dump({**LAUNCH_SPEC, "max_concurrent": -1}), [], "max_concurrent must be an integer >= 0"),
    (yaml.safe_dump(LAUNCH_SPEC), ["--max-concurrent", "-1"], "max_concurrent must be an integer >= 0"),
    (yaml.safe_dump({**LAUNCH_SPEC, "scheduler": {"type": "asha", "grace_period": 0}}), [],
     "scheduler.grace_period must be an integer >= 1"),
    (yaml.safe_dump({**LAUNCH_SPEC, "search": {**TPE, "num_samples": 2.7}}), [], "search.num_samples must be"),
    (yaml.safe_dump(LAUNCH_SPEC), ["--gpus-per-trial", "1.5"], "resources.gpus must be 0, a fraction below 1"),
    (yaml.safe_dump(LAUNCH_SPEC) + "max_failures: 1\nmax_failures: 3\n", [], "key 'max_failures' is given twice (lines"),
    (yaml.safe_dump(LAUNCH_SPEC), ["--set", "valid_per_class=10"], "valid_per_class 10 on synthetic"),
], ids=["max_concurrent", "--max-concurrent", "grace_period", "num_samples", "--gpus-per-trial", "duplicate key",
        "valid_per_class"])
def test_a_refused_launch_exits_2_in_one_line_and_leaves_nothing(tmp_path, capsys, spec_text, args, says):
    """valid_per_class 10 of 10 images a class is refused by the data check, after the claim and
    before Ray; the claim is undone. The others are refused by parse_spec, before anything."""
    path = tmp_path / "refused.yaml"
    path.write_text(spec_text)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    code = main(["--runs-dir", str(tmp_path / "runs"), "launch", str(path), "--tracking-uri", uri,
                 "--storage", storage, "--no-figures", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not ray.is_initialized()
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True
    # Neither store was touched: no MLflow experiment, run or Optuna study can be in them.
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()

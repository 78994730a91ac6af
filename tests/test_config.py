"""The trial config: validated once at the edge; bad keys and values fail naming the valid ones."""

import pytest

from trainables.config import ConfigError, TrialConfig, parse_overrides
from trainables.models import MODELS


def test_defaults_are_the_method_defaults():
    cfg = TrialConfig()
    assert (cfg.roles, cfg.alpha, cfg.beta, cfg.npow, cfg.bpow) == ("xnb", 1.0, 2.0, 1.0, 1.0)
    assert (cfg.label_mode, cfg.loss, cfg.sigma_min, cfg.sigma_max) == ("ls", "ce", 0.3, None)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.01, 0.9, 5e-4)


def test_from_dict_coerces_what_ray_and_yaml_hand_over():
    cfg = TrialConfig.from_dict({"beta": 4, "lr": "1e-3", "epochs": 3.0, "num_classes": "none",
                                 "image_size": 32, "augment": "fcr+trivaug"})
    assert cfg.beta == 4.0 and isinstance(cfg.beta, float)
    assert cfg.lr == 1e-3 and cfg.epochs == 3 and cfg.num_classes is None and cfg.image_size == 32


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['betta'\].*valid keys: dataset"):
        TrialConfig.from_dict({"betta": 2})


@pytest.mark.parametrize(
    ("key", "value", "listed"),
    [
        ("model", "resnet1000", ", ".join(sorted(MODELS))),
        ("dataset", "mnist", "cifar10"),
        ("loss", "mse", "bce, ce, nce"),
        ("label_mode", "lx", "la, ld, lm, ls"),
        ("augment", "fcr+nope", "trivaug"),
        ("precision", "fp8", "auto, bf16, fp32"),
        ("roles", "xq", "xnbe"),
    ],
)
def test_unknown_value_lists_the_valid_choices(key, value, listed):
    with pytest.raises(ConfigError, match=listed.replace("+", r"\+")):
        TrialConfig.from_dict({key: value})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"beta": 0}, "'beta' must be positive"),
        ({"epochs": "ten"}, "'epochs' must be a int"),
        ({"mollify": "yes"}, "'mollify' must be a bool"),
        ({"epochs": True}, "'epochs' must be a int"),
        ({"weight_decay": -1}, "'weight_decay' must be >= 0"),
        ({"sigma_max": 0.1}, "must exceed sigma_min"),
        ({"model": None}, "'model' must be a str, not None"),
        ({"valid_per_class": -1}, "'valid_per_class' must be >= 0"),
        ({"valid_corrupt_images": 0}, "'valid_corrupt_images' must be positive"),
    ],
)
def test_bad_values_fail_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(values)


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text("dataset: synthetic\nbeta: 9\nroles: xn\n")
    cfg = TrialConfig.from_yaml(path, parse_overrides(["beta=4", "label_mode=lm", "sigma_max=none"]))
    assert (cfg.beta, cfg.roles, cfg.label_mode, cfg.sigma_max) == (4.0, "xn", "lm", None)
    assert cfg.sink_class and not cfg.replace(mollify=False).sink_class


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        TrialConfig.from_yaml(path)


def test_override_needs_an_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["beta"])


def test_config_round_trips_through_a_flat_dict():
    cfg = TrialConfig(beta=9.0, roles="xb", augment="fcr+trivaug")
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


def test_validation_defaults_keep_the_whole_training_split():
    cfg = TrialConfig()
    assert (cfg.valid_per_class, cfg.valid_seed, cfg.valid_corrupt_images) == (0, 0, 500)
    spec = TrialConfig(valid_seed=3, corruption_table="cifar").valid_corruption_spec
    assert (spec.source, spec.corruptions, spec.severities, spec.seed, spec.table) == (
        "on_the_fly", ("speckle_noise", "gaussian_blur", "spatter", "saturate"), (1, 2, 3, 4, 5), 3, "cifar")

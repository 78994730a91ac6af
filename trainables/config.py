"""The configuration of one trial: a frozen dataclass built and validated once, at the edge, from
the flat dict that Ray and Optuna hand over or from a YAML file. An unknown key or value fails
here, before any work, naming it and the valid choices."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from contract import ACTIVE_WHEN, is_active  # noqa: F401 (ACTIVE_WHEN: its old home)
from trainables.augment import AUGMENTATIONS, LABEL_MIXING
from trainables.corruptions import EXTRA, SEVERITIES, SOURCES, CorruptionSpec, expand_corruptions
from trainables.corruptions.protocols import PROTOCOLS, RELEASE_PROTOCOL
from trainables.data import DATASETS, STREAMED
from trainables.losses import LOSSES
from trainables.models import MODELS
from trainables.mollify import LABEL_MODES, Mollification, check_roles
from trainables.pipeline import PRECISIONS
from trainables.yamlfile import load_yaml


class ConfigError(ValueError):
    """A trial configuration that cannot run; the message names the key and the valid values."""


@dataclass(frozen=True)
class TrialConfig:
    # --- data ---
    dataset: str = "synthetic"  # DATASETS (loaded whole) or STREAMED (imagenet)
    data_root: str = "data"  # folder holding the dataset in its official layout
    num_classes: int | None = None  # keep the first N classes; None = all
    image_size: int | None = None  # resize once at load time; None = native
    train_size: int | None = None  # synthetic only: number of training images
    # --- model and optimisation (the paper: preactresnet50, SGD 0.01, cosine over 300 epochs) ---
    model: str = "smallcnn"  # MODELS
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    # --- base augmentation ---
    augment: str = "fcr"  # "none" or '+'-joined AUGMENTATIONS names, e.g. "fcr+trivaug"
    ipmix_mixing_set: str | None = None  # a folder of pictures for ipmix to mix with; None: the procedural set
    # --- JSD consistency (AugMix, IPMix): a clean and two augmented views of each image, one batch ---
    jsd: bool = False  # the augment spec's last stage makes the two augmented views, the rest the clean one
    jsd_weight: float = 12.0  # lambda, as both references
    # --- mollification (METHOD.md section 1) ---
    mollify: bool = True
    roles: str = "xnb"  # x clean, n noise, b blur, e pure noise
    alpha: float = 1.0  # t ~ Beta(alpha, beta)
    beta: float = 2.0  # the amount of mollification: the paper uses 2, 4, 9
    npow: float = 1.0  # gamma_noise = sin^2(pi t / 2)^npow
    bpow: float = 1.0  # gamma_blur = t^bpow
    smooth_labels: bool = True  # False: the "no label smoothing" ablation
    label_mode: str = "ls"  # ls, ld, la, lm
    loss: str = "ce"  # LOSSES
    sigma_min: float = 0.3
    sigma_max: float | None = None  # None: the image width
    # --- corruption benchmark (METHOD.md section 4), evaluated after the last epoch ---
    corruption_source: str = "on_the_fly"  # none, on_the_fly (seeded, on the device), generated, official, auto
    corruption_path: str | None = None  # the folder of a generated or official set (auto: where to look / generate)
    corruptions: str = "benchmark"  # comma-separated names or groups: noise, blur, weather, digital, extra, all
    severities: str = "1,2,3,4,5"
    corruption_table: str | None = None  # severity table cifar/tinyimagenet/imagenet; None: by image size
    # The release's protocol (severity table + whether cells take its JPEG round trip, corruptions/
    # protocols.py): cifar, tinyimagenet, imagenet; None: the dataset's own release format.
    corruption_protocol: str | None = None
    # --- validation split (METHOD.md section 6): what searches select on; never trained on ---
    valid_per_class: int = 0  # training images held out per class; 0: none, the whole split trains
    valid_seed: int = 0  # the held-out draw's own seed: the same images in every trial, whatever its seed
    valid_corrupt_images: int | None = 500  # the 4 extra corruptions on the first N held-out images; None: all
    # --- run ---
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    eval_every: int = 1  # evaluate (clean test set, validation) every N epochs, and always at the end
    eval_batch_size: int = 500
    # --- limits for quick runs ---
    limit_train_batches: int | None = None  # batches per epoch
    limit_eval_images: int | None = None  # first N test images
    limit_corrupt_images: int | None = None  # on the fly: corrupt only the first N test images

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_ranges(self)

    @property
    def corruption_cells(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The corruption names (groups expanded) and severities to evaluate."""
        return expand_corruptions(_items(self.corruptions)), tuple(int(s) for s in _items(self.severities))

    @property
    def corruption_spec(self) -> CorruptionSpec | None:
        """The corrupted evaluation to run, or None for `corruption_source: none`. `auto` must be
        made concrete first (`trainables.corruptions.provision.resolve_corruption_set`)."""
        if self.corruption_source == "none":
            return None
        if self.corruption_source == "auto":
            raise ConfigError("corruption_source 'auto' is resolved to official or generated before a trial "
                              "evaluates (resolve_corruption_set)")
        corruptions, severities = self.corruption_cells
        return CorruptionSpec(source=self.corruption_source, path=self.corruption_path, corruptions=corruptions,
                              severities=severities, seed=self.seed, table=self.protocol_table,
                              jpeg=self.protocol_jpeg)

    @property
    def protocol_table(self) -> str | None:
        """The severity table: the protocol's, else `corruption_table`, else None (by image size)."""
        if self.corruption_protocol is not None:
            return PROTOCOLS[self.corruption_protocol].table
        return self.corruption_table

    @property
    def protocol_jpeg(self) -> bool | None:
        """Whether cells take the release's JPEG round trip; None: as the dataset's release."""
        if self.corruption_protocol is not None:
            return PROTOCOLS[self.corruption_protocol].jpeg
        return None

    @property
    def valid_corruption_spec(self) -> CorruptionSpec:
        """The corruptions held apart for selection (METHOD.md section 6): the 4 extra ones at every
        severity, on the fly, seeded by `valid_seed` like the split itself. The validation images
        are training images, so no released or generated file holds them corrupted."""
        return CorruptionSpec(source="on_the_fly", corruptions=EXTRA, severities=SEVERITIES, seed=self.valid_seed,
                              table=self.protocol_table, jpeg=self.protocol_jpeg)

    @property
    def mollification(self) -> Mollification:
        """The mollification knobs as one frozen value (whether it is on: `mollify`)."""
        return Mollification(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Mollification)})

    @property
    def sink_class(self) -> bool:
        """la/lm modes train an extra (K+1)-th output; only when mollification is on."""
        return self.mollify and self.label_mode in ("la", "lm")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialConfig":
        unknown = sorted(set(values) - set(FIELD_TYPES))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(FIELD_TYPES)}")
        return cls(**{key: _coerce(key, value) for key, value in values.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrialConfig":
        try:
            values = load_yaml(Path(path).read_text()) or {}  # a key given twice is refused
        except OSError as err:
            raise ConfigError(f"cannot read the config file {path}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
        return cls.from_dict({**values, **(overrides or {})})

    def replace(self, **changes: Any) -> "TrialConfig":
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrialConfig)


# --- which knobs act -------------------------------------------------------------------------------
# The rules (which knob acts under which settings) and their one evaluator are part of the contract
# with `study` and `analysis`: contract/, imported here under their old names.


def active_params(cfg: TrialConfig) -> dict[str, Any]:
    """The config's values of the knobs that act in it: what a run records as its params."""
    values = cfg.to_dict()
    return {k: v for k, v in values.items() if is_active(k, values)}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings (the CLI's --set) to a dict; values are read as YAML scalars."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


# --- validation ----------------------------------------------------------------------------------

def _coerce(key: str, value: Any) -> Any:
    """Check a value against the field's annotation; ints are accepted for floats and the
    string 'none'/'null' (from --set or a grid) for optional fields."""
    hint = FIELD_TYPES[key]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"config key {key!r} must be a {base.__name__}, not None")
    if base is str and isinstance(value, (list, tuple, int)) and not isinstance(value, bool):
        value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)  # e.g. severities
    if base in (int, float) and isinstance(value, str):
        value = _number(key, value, base)  # YAML 1.1 reads "1e-3" as a string
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if base in (int, float) and isinstance(value, bool) or not isinstance(value, base):
        raise ConfigError(f"config key {key!r} must be a {base.__name__}, got {value!r}")
    return value


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _number(key: str, text: str, base: type) -> int | float:
    try:
        return base(float(text)) if base is float else int(text)
    except ValueError:
        raise ConfigError(f"config key {key!r} must be a {base.__name__}, got {text!r}") from None


def _choice(key: str, value: str, valid: Any) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(sorted(valid))}")


def _check_choices(cfg: TrialConfig) -> None:
    _choice("dataset", cfg.dataset, {**DATASETS, **STREAMED})
    if cfg.dataset in STREAMED and cfg.corruption_source in ("generated", "auto"):
        raise ConfigError(f"corruption_source {cfg.corruption_source!r}: a generated corrupted set of {cfg.dataset} "
                          "is not supported (it would be written whole); use on_the_fly (the release's protocol, "
                          "streamed) or official (the release's files, streamed), or none")
    _choice("model", cfg.model, MODELS)
    _choice("loss", cfg.loss, LOSSES)
    _choice("label_mode", cfg.label_mode, LABEL_MODES)
    _choice("precision", cfg.precision, PRECISIONS)
    if cfg.augment != "none":
        for name in cfg.augment.split("+"):
            _choice("augment", name, AUGMENTATIONS)
    _check_jsd(cfg)
    try:
        check_roles(cfg.roles)
    except ValueError as err:
        raise ConfigError(f"config key 'roles': {err}") from None
    _choice("corruption_source", cfg.corruption_source, ("none", "auto", *SOURCES))
    _check_protocol(cfg)
    if cfg.corruption_source == "auto" and not cfg.corruption_path:
        raise ConfigError("corruption_source 'auto' needs corruption_path: the folder that holds the official "
                          "release (or its parent), where a generated set is kept otherwise")
    try:
        # `auto` is checked as the on-the-fly spec of the same cells (its path is checked above).
        (dataclasses.replace(cfg, corruption_source="on_the_fly") if cfg.corruption_source == "auto"
         else cfg).corruption_spec
    except ValueError as err:
        raise ConfigError(f"corruption settings: {err}") from None
    if cfg.device != "auto" and cfg.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {cfg.device!r}; valid: auto, cpu, cuda, cuda:N")


def _check_protocol(cfg: TrialConfig) -> None:
    """A protocol fixes the severity table; an official release holds only its own protocol."""
    if cfg.corruption_protocol is None:
        return
    _choice("corruption_protocol", cfg.corruption_protocol, PROTOCOLS)
    table = PROTOCOLS[cfg.corruption_protocol].table
    if cfg.corruption_table is not None and cfg.corruption_table != table:
        raise ConfigError(f"corruption_table {cfg.corruption_table!r} contradicts corruption_protocol "
                          f"{cfg.corruption_protocol!r} (whose table is {table!r}); set one of them")
    release = RELEASE_PROTOCOL.get(cfg.dataset)
    if cfg.corruption_source == "official" and cfg.corruption_protocol != release:
        raise ConfigError(f"the official {cfg.dataset} release was made under the {release} protocol, not "
                          f"{cfg.corruption_protocol!r}: use corruption_source on_the_fly, generated or auto "
                          f"(which generates a set under the protocol asked for)")


def _check_jsd(cfg: TrialConfig) -> None:
    """The consistency loss compares two draws of the spec's last stage on the rest's output."""
    if not cfg.jsd:
        return
    last = cfg.augment.rpartition("+")[2]
    if cfg.augment == "none" or last in LABEL_MIXING:
        raise ConfigError(f"jsd compares two augmented views of each image: augment must end with a "
                          f"label-preserving augmentation that makes them (e.g. fcr+augmix, fcr+ipmix), "
                          f"got {cfg.augment!r}")


def _check_ranges(cfg: TrialConfig) -> None:
    for key, hint in FIELD_TYPES.items():  # NaN passes every comparison below, inf most
        value = getattr(cfg, key)
        if hint in (float, float | None) and value is not None and not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    positive = ("epochs", "batch_size", "lr", "alpha", "beta", "npow", "bpow", "sigma_min", "jsd_weight",
                "eval_every", "eval_batch_size", "num_classes", "image_size", "train_size",
                "limit_train_batches", "limit_eval_images", "limit_corrupt_images", "sigma_max",
                "valid_corrupt_images")
    for key in positive:
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"config key {key!r} must be positive, got {value!r}")
    for key in ("momentum", "weight_decay", "valid_per_class"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)!r}")
    if cfg.sigma_max is not None and cfg.sigma_max <= cfg.sigma_min:
        raise ConfigError(f"sigma_max ({cfg.sigma_max}) must exceed sigma_min ({cfg.sigma_min})")

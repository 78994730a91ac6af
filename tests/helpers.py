"""Helpers that several test files share: running `python -m study` on a loopback-only network,
reading a study's MLflow runs, and a small Tiny ImageNet tree in the official layout. A module, not
a test file, so that no test file imports another."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# --- real studies (Ray, Optuna, MLflow) ------------------------------------------------------------

def loopback_command(args: list[str]) -> list[str]:
    """Run `args` in a new network namespace that has only the loopback interface."""
    if shutil.which("unshare") is None:
        pytest.skip("needs `unshare` to keep the Ray cluster on an only-loopback network")
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *args]


def study_cmd(tmp_path: Path, *args: str) -> list[str]:
    return loopback_command([sys.executable, "-m", "study", "--runs-dir", str(tmp_path / "runs"), *args])


def study_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def trial_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient  # here: the GPU check collects files importing this module without MLflow

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client, [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mollify.kind") == "study"]
    return client, parents, [r for r in runs if r.data.tags.get("mollify.kind") == "trial"]


# --- Tiny ImageNet: a small tree in the official layout ----------------------------------------------

TINY_WNIDS = ["n01443537", "n01629819", "n01641577", "n01644900"]
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus",
              "n01629819": "European fire salamander, Salamandra salamandra",
              "n01641577": "bullfrog, Rana catesbeiana"}  # the fourth has no entry: name = wnid
TINY_TRAIN_COUNTS = [3, 3, 2, 3]  # partial train split, as in the shared copy
TINY_VAL = [("val_0.JPEG", "n01641577"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n01644900"),
            ("val_3.JPEG", "n01629819"), ("val_4.JPEG", "n01443537"), ("val_5.JPEG", "n01641577"),
            ("val_6.JPEG", "n01629819"), ("val_7.JPEG", "n01644900")]
GREY_FILE = "train/n01629819/images/n01629819_1.JPEG"


def _save_jpeg(path: Path, rng: np.random.Generator, label: int, grey: bool = False) -> None:
    """A 64x64 JPEG whose dominant colour encodes its class (so labels can be checked by pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 40, (64, 64, 3)) + 50 * label
    pixels[..., label % 3] += 40
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    (image.convert("L") if grey else image).save(path, quality=90)


def make_tiny_tree(base: Path) -> Path:
    root = base / "tiny-imagenet-200"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\t{s}\n" for w, s in TINY_WORDS.items()))
    for label, (wnid, count) in enumerate(zip(TINY_WNIDS, TINY_TRAIN_COUNTS)):
        (root / "train" / wnid).mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(count):
            rel = f"train/{wnid}/images/{wnid}_{i}.JPEG"
            _save_jpeg(root / rel, rng, label, grey=rel == GREY_FILE)
    rows = []
    for filename, wnid in TINY_VAL:
        _save_jpeg(root / "val" / "images" / filename, rng, TINY_WNIDS.index(wnid))
        rows.append(f"{filename}\t{wnid}\t0\t0\t63\t63\n")
    (root / "val" / "val_annotations.txt").write_text("".join(rows))
    return root

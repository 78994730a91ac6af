"""Shared fixtures and the test tiers. Real datasets are read from the shared data folder beside
the repository (``../shared/data``, or ``$MOLLIFY_SHARED_DATA``) and never copied into the
repository itself; tests that need them skip with a reason when they are absent.

Tiers (markers, declared in pyproject.toml): ``slow`` (real studies and long trials; `make
test-quick` leaves them out), ``cluster`` (the compose services as processes on loopback, also
slow; `make test-cluster`), ``gpu`` (needs CUDA: skipped, with one reason, where it is absent).
Helpers that several test files share live in ``helpers.py``, not in a test file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_ARCHIVES = ("train-000-099.tar.gz", "train-100-249.tar.gz", "val.tar.gz")
NO_GPU = "needs a CUDA device (marker gpu)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `gpu` tier skips, for one reason, where CUDA is absent."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch  # only when a GPU test was collected

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=NO_GPU))


def shared_data_dir() -> Path:
    """The shared data folder: $MOLLIFY_SHARED_DATA, else ../shared/data next to the repository."""
    override = os.environ.get("MOLLIFY_SHARED_DATA")
    return Path(override).expanduser() if override else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_imagenet_root() -> Path:
    """Real Tiny ImageNet (250 train images per class, full val), extracted once into
    ``<repo>/.cache/tiny-imagenet-200`` (git-ignored) and reused while the archives are unchanged."""
    source = shared_data_dir() / "tiny-imagenet-200"
    missing = [name for name in TINY_ARCHIVES if not (source / name).is_file()]
    if missing:
        pytest.skip(f"../shared/data/tiny-imagenet-200 not present: {source} lacks "
                    f"{', '.join(missing)} (set MOLLIFY_SHARED_DATA to the folder holding "
                    "tiny-imagenet-200/)")
    return _extract_once([source / name for name in TINY_ARCHIVES], REPO / ".cache")


def extract(archive: Path, into: Path) -> None:
    """GNU tar where there is one (about 5x faster than tarfile on these 60,000 small files: the
    quick tier's first run extracts them), else tarfile with its safe 'data' filter."""
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(into), "--no-same-owner"], check=True)
        return
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")


def _extract_once(archives: list[Path], cache: Path) -> Path:
    """Extract the archives (each holding tiny-imagenet-200/...) into cache, unless a previous
    extraction of these very archives completed; a marker written last records that."""
    target = cache / "tiny-imagenet-200"
    marker = cache / "tiny-imagenet-200.complete"
    stamp = "".join(f"{a.name}\t{a.stat().st_size}\t{a.stat().st_mtime_ns}\n" for a in archives)
    if target.is_dir() and marker.is_file() and marker.read_text() == stamp:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Extract beside the target and move it into place, so an interrupted run never leaves a
    # half-extracted folder that looks complete.
    with tempfile.TemporaryDirectory(dir=cache, prefix="extract-") as tmp:
        for archive in archives:
            extract(archive, Path(tmp))
        marker.unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(Path(tmp) / "tiny-imagenet-200", target)
    marker.write_text(stamp)
    return target


README_LAUNCH = ".venv/bin/python -m study launch smoke"  # README.md's command, as a new user runs it


@pytest.fixture(scope="session")
def readme_study(tmp_path_factory):
    """README.md's `launch smoke`, run once from a copy of the checkout (`helpers.copy_checkout`)
    inside a loopback-only network namespace that later README commands (the two UIs) use too:
    (checkout root, namespace, the launch's CompletedProcess). tests/test_readme.py goes on with
    the README's next commands; tests/test_record.py reads the study's record."""
    import sys

    from helpers import Namespace, copy_checkout

    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("make") is None:
        pytest.skip("needs root, unshare and make (a loopback-only network namespace for the study and the UIs)")
    if not (Path(sys.prefix) / "bin" / "mlflow").exists():
        pytest.skip("needs the project's virtualenv (make install)")
    base = tmp_path_factory.mktemp("readme")
    root = copy_checkout(base / "clone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPTUNA_"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", PYTHONPATH=str(root))
    (base / "logs").mkdir()
    ns = Namespace(env, base / "logs")
    try:
        launched = ns.run(["bash", "-c", README_LAUNCH], cwd=root, timeout=900)
        assert launched.returncode == 0, f"{README_LAUNCH}\n{launched.stdout[-3000:]}\n{launched.stderr[-3000:]}"
        yield root, ns, launched
    finally:
        ns.close()

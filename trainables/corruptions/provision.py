"""Which corrupted set a trial evaluates on when its config says `corruption_source: auto`.

The paper evaluated on the official releases. `auto` takes the official release where the config
points (`corruption_path`, the release folder itself or its parent), and otherwise a set that
`generate.py` writes in the same format under `<corruption_path>/generated/<key>/`, made once and
reused by every trial that evaluates the same classes at the same size: a study makes it before its
first trial starts, a lone trial when it needs it. Every trial of a study therefore sees the very
same corrupted images, whatever its training seed, as with a release.

A generated set is complete once its manifest (`generated.json`) exists: the set is written in a
folder beside its final place, the manifest last, and then moved into place in one rename, so a
reader never sees half a set, and a concurrent maker's copy is simply dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trainables.corruptions.generate import GenerateRequest, generate_corrupted_set
from trainables.corruptions.registry import SEVERITIES
from trainables.corruptions.protocols import RELEASE_PROTOCOL, effective_jpeg, release_jpeg
from trainables.corruptions.releases import (NPY_DATASETS, TREE_DATASETS, OfficialSetNotFoundError, is_npy_set,
                                             missing_message, release_folder)

if TYPE_CHECKING:
    from trainables.config import TrialConfig

MANIFEST = "generated.json"
GENERATED_SEED = 0  # one fixed set for every trial, as a release is
GENERATED_DIR = "generated"
SEEDED_DATASETS = ("synthetic",)  # a different clean test set for every trial seed


@dataclass(frozen=True)
class CorruptedSet:
    """A concrete corrupted set: `source` official or generated, and its folder."""

    source: str
    path: str


@dataclass(frozen=True)
class SetRequest:
    """What a trial evaluates on: the corruptions and severities of one dataset's test split, its
    first `num_classes` classes at `image_size` (None: all, native)."""

    dataset: str
    root: Path  # corruption_path: where the release is looked for and generated sets are kept
    data_root: Path  # the clean dataset (generation reads its test split, trees its wnids.txt)
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    num_classes: int | None = None
    image_size: int | None = None
    table: str | None = None
    jpeg: bool | None = None  # the release's JPEG round trip; None: as the dataset's release
    protocol: str | None = None  # the named protocol asked for; None: the dataset's release format
    device: str = "cpu"
    data_seed: int = 0  # synthetic only: its clean test split (classes and images) follows the trial's seed

    def key(self) -> str:
        """The generated set's folder name: what changes its images."""
        classes = f"{self.num_classes}classes" if self.num_classes else "allclasses"
        size = f"{self.image_size}px" if self.image_size else "native"
        data = f"-data{self.data_seed}" if self.dataset in SEEDED_DATASETS else ""
        # Sets in the release's own format keep the names they had before protocols were a setting.
        jpeg = "" if effective_jpeg(self.dataset, self.jpeg) == release_jpeg(self.dataset) else \
            ("-jpeg85" if self.jpeg else "-nojpeg")
        return f"{self.dataset}{data}-{classes}-{size}-{self.table or 'table-by-size'}{jpeg}-seed{GENERATED_SEED}"


def provide(req: SetRequest, progress: Callable[[str], None] = print) -> CorruptedSet:
    """The official release under `req.root` if it holds every requested cell, else the generated
    set (made now if missing or lacking cells)."""
    official = release_folder(req.dataset, req.root)
    release_made = req.protocol in (None, RELEASE_PROTOCOL.get(req.dataset))  # a release only holds its own
    if release_made and holds_cells(req.dataset, official, req.corruptions, req.severities):
        source = "generated" if (official / MANIFEST).is_file() else "official"
        return CorruptedSet(source, str(official.resolve()))
    folder = req.root / GENERATED_DIR / req.key()
    if not covers(folder, req):
        progress(f"[corruptions] generating {req.dataset} corrupted set ({len(req.corruptions)} corruptions x "
                 f"{len(req.severities)} severities) into {folder}; no official release in {req.root}")
        make(folder, req, progress)
    return CorruptedSet("generated", str(folder.resolve()))


def holds_cells(dataset: str, folder: Path, corruptions: Sequence[str], severities: Sequence[int]) -> bool:
    """Whether `folder` holds every (corruption, severity) cell in the official format."""
    if dataset in NPY_DATASETS:
        return (folder / "labels.npy").is_file() and all((folder / f"{c}.npy").is_file() for c in corruptions)
    if dataset in TREE_DATASETS:
        return all((folder / c / str(s)).is_dir() for c in corruptions for s in severities)
    return False


def check_corrupted_set(cfg: "TrialConfig") -> None:
    """An official or generated set the trial will be scored on must hold every cell it asks for
    before the trial trains, not be found missing after its last epoch (hours later on ImageNet).
    Only folders are looked at; raises OfficialSetNotFoundError naming the first missing cell."""
    if cfg.corruption_source not in ("official", "generated"):  # `auto` is made concrete first
        return
    spec = cfg.corruption_spec
    root = Path(spec.path).expanduser()
    folder = release_folder(cfg.dataset, root)
    npy = cfg.dataset in NPY_DATASETS or is_npy_set(cfg.dataset, root)
    for corruption in spec.corruptions:
        for severity in spec.severities:
            cell = folder / (f"{corruption}.npy" if npy else f"{corruption}/{severity}")
            if not (cell.is_file() if npy else cell.is_dir()):
                raise OfficialSetNotFoundError(missing_message(cfg.dataset, cell, root, spec.source, corruption))


def covers(folder: Path, req: SetRequest) -> bool:
    """Whether the generated set in `folder` is complete and holds every requested cell."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    made = json.loads(manifest.read_text())
    return set(req.corruptions) <= set(made["corruptions"]) and set(req.severities) <= set(made["severities"])


def make(folder: Path, req: SetRequest, progress: Callable[[str], None]) -> None:
    """Generate into a fresh folder beside `folder`, write the manifest, move it into place."""
    previous = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
    corruptions = tuple(dict.fromkeys([*previous.get("corruptions", ()), *req.corruptions]))
    as_npy = req.dataset in NPY_DATASETS or not effective_jpeg(req.dataset, req.jpeg)
    severities = SEVERITIES if as_npy else tuple(
        sorted(set(previous.get("severities", ())) | set(req.severities)))
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        generate_corrupted_set(GenerateRequest(
            dataset=req.dataset, out=staging, data_root=req.data_root, corruptions=corruptions,
            severities=severities, seed=GENERATED_SEED, data_seed=req.data_seed, num_classes=req.num_classes,
            image_size=req.image_size, table=req.table, jpeg=req.jpeg, device=req.device, progress=progress))
        manifest = {"dataset": req.dataset, "num_classes": req.num_classes, "image_size": req.image_size,
                    "table": req.table, "jpeg": effective_jpeg(req.dataset, req.jpeg), "seed": GENERATED_SEED, "data_seed": req.data_seed,
                    "corruptions": list(corruptions),
                    "severities": list(severities), "data_root": str(req.data_root.resolve())}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _swap_in(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, folder: Path) -> None:
    """Move `staging` to `folder`; an older, smaller set there is replaced, and a set another
    process completed meanwhile is kept (ours is dropped by the caller)."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
        try:
            os.replace(folder, old)
        except OSError:
            return
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError:  # another process moved its complete set in first
        pass


def resolve_corruption_set(cfg: "TrialConfig", progress: Callable[[str], None] = print) -> "TrialConfig":
    """`cfg` with `corruption_source: auto` made concrete (official or generated, with its path);
    any other source is returned unchanged."""
    if cfg.corruption_source != "auto":
        return cfg
    corruptions, severities = cfg.corruption_cells
    req = SetRequest(dataset=cfg.dataset, root=Path(cfg.corruption_path).expanduser(),
                     data_root=Path(cfg.data_root).expanduser(), corruptions=corruptions,
                     severities=severities, num_classes=cfg.num_classes, image_size=cfg.image_size,
                     table=cfg.protocol_table, jpeg=cfg.protocol_jpeg, protocol=cfg.corruption_protocol,
                     device=_device(cfg.device),
                     data_seed=cfg.seed if cfg.dataset in SEEDED_DATASETS else 0)
    found = provide(req, progress)
    return cfg.replace(corruption_source=found.source, corruption_path=found.path)


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name

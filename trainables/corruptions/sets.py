"""Corrupted evaluation sets: the official releases, generating them, and evaluating a model on them.

Formats (the official ones; `generate_corrupted_set` writes the same):
- CIFAR-10-C / CIFAR-100-C (and our generated sets of any npy-format dataset): `<corruption>.npy`,
  uint8 (5 N, H, W, 3), severity-major (rows (s-1) N .. s N - 1 are severity s, in test-set
  order), and `labels.npy` (the N labels repeated 5 times). N is read from the files, never assumed.
- Tiny-ImageNet-C / ImageNet-C: `<corruption>/<severity>/<wnid>/*.JPEG`; labels come from the wnid
  folder in the clean dataset's class order (wnids.txt).

Three sources for `evaluate_corruptions`: "on_the_fly" (corrupt the clean test set on its device,
seeded per cell, nothing written), "generated" (our files) and "official" (the authors' download).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg, read_file

from trainables.corruptions.registry import (
    BENCHMARK, GROUPS, SEVERITIES, corrupt, validate_corruptions, validate_severities, validate_table,
)
from trainables.data import DATASET_STATS, ImageSet, load_dataset
from trainables.evaluate import METRICS, classification_metrics, predict_logits, reliability_bins

SOURCES = ("on_the_fly", "generated", "official")
NPY_DATASETS = ("cifar10", "cifar100", "synthetic")  # stored as <corruption>.npy + labels.npy
TREE_DATASETS = ("tinyimagenet", "imagenet")  # stored as <corruption>/<severity>/<wnid>/*.JPEG
OFFICIAL = {  # dataset: (release folder name, where to get it)
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/records/2535967"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/records/3555552"),
    "tinyimagenet": ("Tiny-ImageNet-C", "https://zenodo.org/records/2536630"),
    "imagenet": ("ImageNet-C", "https://zenodo.org/records/2235448"),
}
TREE_JPEG_QUALITY = 85  # make_tinyimagenet_c.py / make_imagenet_c.py: .save(path, quality=85)
_CHUNK = 1000


class OfficialSetNotFoundError(FileNotFoundError):
    """A corrupted test set's files are not where they were looked for."""


@dataclass(frozen=True)
class CorruptionSpec:
    """What corrupted evaluation a trial runs.

    source: "on_the_fly" | "generated" | "official"; path: the folder of a generated or official set
    (required for those two; the release folder itself or its parent); table: severity table,
    default from the image size; seed: on-the-fly randomness (each cell gets its own stream).
    """

    source: str = "on_the_fly"
    path: str | None = None
    corruptions: tuple[str, ...] = BENCHMARK
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    table: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown corruption source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.source != "on_the_fly" and not self.path:
            raise ValueError(f"corruption source {self.source!r} needs a path to the corrupted set")
        object.__setattr__(self, "corruptions", validate_corruptions(self.corruptions))
        object.__setattr__(self, "severities", validate_severities(self.severities))
        if self.table is not None:
            validate_table(self.table)


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_corruptions(
    model: nn.Module,
    test: ImageSet,
    spec: CorruptionSpec,
    *,
    dataset: str,
    batch_size: int = 500,
    precision: str = "auto",
    data_root: str | Path | None = None,
) -> tuple[dict[str, float], dict[str, dict]]:
    """Evaluate `model` on every (corruption, severity) cell of `spec`.

    test: the clean test set (on the model's device), whose class subset and image size the
    corrupted sets follow; data_root: the clean dataset's root (Tiny ImageNet: for wnids.txt).
    Returns (metrics, extras): metrics named corrupt/<c>/s<k>/<m>, corrupt/<c>/<m> (mean over
    severities), corrupt/group/<g>/<m> and corrupt/<m> (means over benchmark cells only; the 4
    extra corruptions never enter them), m in error, nll, ece, ece_batch100; extras holds
    "corrupt_s<k>": reliability bins pooled over the benchmark cells (all cells if none) at the
    highest evaluated severity k, the most corrupted evaluation.
    """
    cells: dict[tuple[str, int], dict[str, float]] = {}
    top = max(spec.severities)
    pooled: list[dict[str, list[float]]] = []
    pool_names = [c for c in spec.corruptions if c in BENCHMARK] or list(spec.corruptions)
    for name in spec.corruptions:
        for severity in spec.severities:
            logits, labels = _cell_logits(model, test, spec, name, severity, dataset=dataset,
                                          batch_size=batch_size, precision=precision, data_root=data_root)
            cells[name, severity] = classification_metrics(logits, labels)
            if severity == top and name in pool_names:
                pooled.append(reliability_bins(logits.softmax(dim=1), labels))
    return summarize_cells(cells), {f"corrupt_s{top}": merge_reliability(pooled)}


def summarize_cells(cells: dict[tuple[str, int], dict[str, float]]) -> dict[str, float]:
    """Per-cell metrics -> the named metrics (see evaluate_corruptions)."""
    out: dict[str, float] = {}
    for (name, severity), metrics in cells.items():
        for m in METRICS:
            out[f"corrupt/{name}/s{severity}/{m}"] = metrics[m]
    for name in dict.fromkeys(n for n, _ in cells):
        for m in METRICS:
            out[f"corrupt/{name}/{m}"] = _mean(v[m] for (n, _), v in cells.items() if n == name)
    benchmark = {key: v for key, v in cells.items() if key[0] in BENCHMARK}
    for group, members in GROUPS.items():
        in_group = [v for (n, _), v in benchmark.items() if n in members]
        for m in METRICS:
            if in_group:
                out[f"corrupt/group/{group}/{m}"] = _mean(v[m] for v in in_group)
    for m in METRICS:
        if benchmark:
            out[f"corrupt/{m}"] = _mean(v[m] for v in benchmark.values())
    return out


def corruption_metric_names(corruptions: Sequence[str], severities: Sequence[int]) -> tuple[str, ...]:
    """Every metric name `evaluate_corruptions` returns for these corruptions and severities."""
    fake = {(c, s): dict.fromkeys(METRICS, 0.0) for c in corruptions for s in severities}
    return tuple(summarize_cells(fake))


def merge_reliability(parts: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Pool reliability bins of several sets: counts add, means are count-weighted."""
    count = np.sum([p["count"] for p in parts], axis=0)
    safe = np.maximum(count, 1)
    conf = np.sum([np.multiply(p["confidence"], p["count"]) for p in parts], axis=0) / safe
    acc = np.sum([np.multiply(p["accuracy"], p["count"]) for p in parts], axis=0) / safe
    return {"count": count.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist()}


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values))


def _cell_logits(model: nn.Module, test: ImageSet, spec: CorruptionSpec, name: str, severity: int, *,
                 dataset: str, batch_size: int, precision: str,
                 data_root: str | Path | None) -> tuple[Tensor, Tensor]:
    if spec.source == "on_the_fly":
        g = cell_generator(spec.seed, name, severity, test.images.device)
        transform = _corruption_transform(name, severity, g, spec.table)
        logits = predict_logits(model, test.images, test.mean, test.std, num_classes=test.num_classes,
                                batch_size=batch_size, precision=precision, transform=transform)
        return logits, test.labels
    cell = load_corrupted_cell(dataset, spec.path, name, severity, source=spec.source,
                               num_classes=test.num_classes, image_size=test.images.shape[-1],
                               device=test.images.device, data_root=data_root)
    logits = predict_logits(model, cell.images, test.mean, test.std, num_classes=test.num_classes,
                            batch_size=batch_size, precision=precision)
    return logits, cell.labels


def _corruption_transform(name: str, severity: int, g: torch.Generator,
                          table: str | None) -> Callable[[Tensor], Tensor]:
    return lambda x: corrupt(x, name, severity, generator=g, table=table)


def cell_generator(seed: int, corruption: str, severity: int, device: torch.device | str) -> torch.Generator:
    """The random stream of one (corruption, severity) cell: on-the-fly evaluation and `generate`
    use the same one, so on the same device and batch size they produce the same images."""
    digest = hashlib.sha256(repr((seed, "corruption", corruption, severity)).encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


# ---------------------------------------------------------------------------------------------
# Reading a cell


def load_corrupted_cell(
    dataset: str,
    path: str | Path,
    corruption: str,
    severity: int,
    *,
    source: str = "official",
    num_classes: int | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
) -> ImageSet:
    """One (corruption, severity) cell of a corrupted set in the official format as an ImageSet:
    uint8 images on `device`, labels; the first `num_classes` classes kept and images resized to
    `image_size` as the clean loader does. Tiny ImageNet / ImageNet need `data_root` (wnids.txt)."""
    validate_corruptions([corruption])
    validate_severities([severity])
    if dataset in NPY_DATASETS:
        images, labels = _read_npy_cell(dataset, Path(path), corruption, severity, source, num_classes)
    elif dataset in TREE_DATASETS:
        wnids = read_wnids(data_root, num_classes)
        images, labels = _read_tree_cell(dataset, Path(path), corruption, severity, source, wnids)
    else:
        raise ValueError(f"no corrupted-set format for dataset {dataset!r}; valid: "
                         f"{', '.join(NPY_DATASETS + TREE_DATASETS)}")
    if image_size is not None and images.shape[-1] != image_size:
        images = TF.resize(images, [image_size, image_size], antialias=True)
    mean, std = DATASET_STATS.get(dataset, DATASET_STATS["tinyimagenet"])
    k = num_classes or int(labels.max()) + 1
    return ImageSet(images.to(device), labels.to(device), tuple(f"class_{i}" for i in range(k)), mean, std)


def _read_npy_cell(dataset: str, path: Path, corruption: str, severity: int, source: str,
                   num_classes: int | None) -> tuple[Tensor, Tensor]:
    folder = _release_folder(dataset, path)
    files = folder / f"{corruption}.npy", folder / "labels.npy"
    for f in files:
        if not f.is_file():
            raise OfficialSetNotFoundError(missing_message(dataset, f, path, source, corruption))
    data = np.load(files[0], mmap_mode="r")  # read only this severity's rows
    labels = np.load(files[1], mmap_mode="r")
    if len(labels) % 5 or len(data) != len(labels):
        raise ValueError(f"{folder}: {len(data)} images and {len(labels)} labels; expected 5 equal "
                         "severity blocks of both")
    n = len(labels) // 5
    rows = slice((severity - 1) * n, severity * n)
    images = torch.from_numpy(np.array(data[rows])).permute(0, 3, 1, 2).contiguous()  # copies the rows
    cell_labels = torch.from_numpy(np.asarray(labels[rows]).astype(np.int64))
    if num_classes is not None:
        keep = cell_labels < num_classes
        images, cell_labels = images[keep], cell_labels[keep]
    return images, cell_labels


def _read_tree_cell(dataset: str, path: Path, corruption: str, severity: int, source: str,
                    wnids: Sequence[str]) -> tuple[Tensor, Tensor]:
    folder = _release_folder(dataset, path) / corruption / str(severity)
    if not folder.is_dir():
        raise OfficialSetNotFoundError(missing_message(dataset, folder, path, source, corruption))
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        names = sorted((folder / wnid).glob("*.JPEG"), key=_natural) if (folder / wnid).is_dir() else []
        files += names
        labels += [label] * len(names)
    if not files:
        raise OfficialSetNotFoundError(missing_message(dataset, folder, path, source, corruption)
                                       + f"\n(no <wnid>/*.JPEG for the {len(wnids)} classes asked for)")
    decoded = decode_jpeg([read_file(str(f)) for f in files], mode=ImageReadMode.RGB)
    if len({im.shape for im in decoded}) > 1:
        side = max(im.shape[-1] for im in decoded)
        decoded = [TF.resize(im, [side, side], antialias=True) for im in decoded]
    return torch.stack(decoded), torch.tensor(labels, dtype=torch.int64)


def _natural(path: Path) -> list:
    """Sort key reading digit runs as numbers: val_2 before val_10 (test-set order within a class)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def read_wnids(data_root: str | Path | None, num_classes: int | None) -> list[str]:
    """The class order of the clean Tiny ImageNet (wnids.txt under data_root or its
    tiny-imagenet-200/ child), first num_classes."""
    if data_root is None:
        raise ValueError("reading a Tiny-ImageNet-C / ImageNet-C folder tree needs data_root (the clean "
                         "dataset, whose wnids.txt fixes the class order)")
    root = Path(data_root).expanduser()
    for candidate in (root / "wnids.txt", root / "tiny-imagenet-200" / "wnids.txt"):
        if candidate.is_file():
            wnids = [w.strip() for w in candidate.read_text().splitlines() if w.strip()]
            return wnids[:num_classes] if num_classes else wnids
    raise FileNotFoundError(f"wnids.txt not found under {root} (nor its tiny-imagenet-200/ child)")


def _release_folder(dataset: str, path: Path) -> Path:
    """`path` itself, or its child named like the official release (e.g. CIFAR-10-C/)."""
    child = path.expanduser() / OFFICIAL.get(dataset, ("", ""))[0]
    return child if OFFICIAL.get(dataset) and child.is_dir() else path.expanduser()


def missing_message(dataset: str, missing: Path, out: Path, source: str, corruption: str = "") -> str:
    """Where a corrupted set was looked for, where to download it, and how to generate it."""
    name, url = OFFICIAL.get(dataset, (f"{dataset}-C", None))
    lines = [f"{name} ({source} corrupted set): {missing} not found."]
    if url is not None and source == "official":
        lines.append(f"Download the official release from {url} and extract it into {out}, or "
                     "generate it instead:")
    else:
        lines.append("Generate it with:")
    only = f" --corruptions {corruption}" if source == "generated" and corruption else ""
    lines.append(f"  python -m trainables.corruptions generate --dataset {dataset} --out {out} "
                 f"--data-root DATA_ROOT{only}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Generating a set


@dataclass(frozen=True)
class GenerateRequest:
    dataset: str
    out: Path
    data_root: Path
    corruptions: tuple[str, ...] = BENCHMARK
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    num_classes: int | None = None
    image_size: int | None = None
    table: str | None = None
    device: str = "cpu"
    batch_size: int = _CHUNK
    progress: Callable[[str], None] = field(default=print, compare=False)


def generate_corrupted_set(req: GenerateRequest) -> Path:
    """Write the corrupted versions of the clean test split in the official format; returns the
    folder written. Deterministic for a seed (each cell draws from `cell_generator`)."""
    validate_corruptions(req.corruptions)
    severities = validate_severities(req.severities)
    if req.dataset not in NPY_DATASETS + TREE_DATASETS:
        raise ValueError(f"cannot generate for dataset {req.dataset!r}; valid: "
                         f"{', '.join(NPY_DATASETS + TREE_DATASETS)}")
    test = load_dataset(req.dataset, req.data_root, "test", num_classes=req.num_classes,
                        image_size=req.image_size, device=req.device)
    out = req.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if req.dataset in NPY_DATASETS:
        if set(severities) != set(SEVERITIES):
            raise ValueError("the .npy format holds all 5 severities; pass none or all of them")
        np.save(out / "labels.npy", test.labels.cpu().repeat(5).numpy().astype(np.uint8 if
                test.num_classes <= 256 else np.int64))
    wnids = read_wnids(req.data_root, req.num_classes) if req.dataset in TREE_DATASETS else []
    for name in req.corruptions:
        start = time.perf_counter()
        cells = {s: _corrupted_u8(test.images, name, s, req) for s in severities}
        if req.dataset in NPY_DATASETS:
            stacked = torch.cat([cells[s] for s in SEVERITIES]).permute(0, 2, 3, 1).contiguous()
            np.save(out / f"{name}.npy", stacked.numpy())
        else:
            for s, images in cells.items():
                _write_tree(out / name / str(s), images, test.labels.cpu(), wnids)
        req.progress(f"{name}: {len(test)} images x {len(severities)} severities -> {out} "
                     f"in {time.perf_counter() - start:.1f}s")
    return out


def _corrupted_u8(images: Tensor, name: str, severity: int, req: GenerateRequest) -> Tensor:
    """uint8 (N, 3, H, W) on the CPU; batches of req.batch_size from one cell generator."""
    g = cell_generator(req.seed, name, severity, images.device)
    parts = []
    for start in range(0, len(images), req.batch_size):
        x = images[start:start + req.batch_size].float() / 255
        y = corrupt(x, name, severity, generator=g, table=req.table)
        parts.append(torch.round(y * 255).to(torch.uint8).cpu())
    return torch.cat(parts)


def _write_tree(folder: Path, images: Tensor, labels: Tensor, wnids: Sequence[str]) -> None:
    """JPEG files <folder>/<wnid>/val_<i>.JPEG at the authors' quality 85 (JPEG adds its own
    compression, as in the official Tiny-ImageNet-C); i is the image's index in the clean test set."""
    encoded = encode_jpeg(list(images), quality=TREE_JPEG_QUALITY)
    for wnid in set(wnids[int(k)] for k in labels.unique()):
        (folder / wnid).mkdir(parents=True, exist_ok=True)
    for i, (data, label) in enumerate(zip(encoded, labels.tolist())):
        (folder / wnids[label] / f"val_{i}.JPEG").write_bytes(data.numpy().tobytes())

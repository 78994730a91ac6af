"""A small folder in ImageNet's layout, built from Tiny ImageNet, to run the streamed path without
ImageNet: ``python -m trainables.data.imagenet_smoke --from data/tiny-imagenet-200 --out data/imagenet-smoke``
(`make imagenet-smoke`).

It takes the first `classes` wnids of Tiny ImageNet's wnids.txt, the first `train_per_class`
training images of each (sorted by name) and the first `val_per_class` val images of each (in
val_annotations.txt's order), upscales them (bicubic) from 64 px to `size` px and writes them as
JPEG (quality 95) where ILSVRC-2012 keeps its own::

    <out>/train/<wnid>/<wnid>_<i>.JPEG
    <out>/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG    numbered 1.. in annotation order, as ImageNet's
    <out>/LOC_synset_mapping.txt                       "<wnid> <synonyms>", Kaggle's names file

Idempotent: a marker holding the build's parameters is written last, into a temporary folder that
is then renamed to `out`; an output with the same marker is left alone, anything else (an
interrupted build, other parameters) is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from trainables.data.base import DatasetError
from trainables.data.tiny import _read_lines, _tiny_root, _tiny_train_files, _tiny_val_files

MARKER = ".imagenet-smoke.json"
QUALITY = 95


def build_smoke(source: str | Path, out: str | Path, *, classes: int = 10, train_per_class: int = 50,
                val_per_class: int = 20, size: int = 128) -> Path:
    """Write (or keep, when already complete with these parameters) the smoke folder `out` from the
    Tiny ImageNet folder `source`; returns `out`."""
    for name, value in (("classes", classes), ("train_per_class", train_per_class),
                        ("val_per_class", val_per_class), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    tiny, out = _tiny_root(Path(source).expanduser()), Path(out).expanduser()
    params = {"source": str(tiny.absolute()), "classes": classes, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "size": size}
    if _marker(out) == params:
        return out
    plan = _plan(tiny, classes, train_per_class, val_per_class)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        _write(tmp, plan, size, _synonyms(tiny, [wnid for wnid, _, _ in plan]))
        (tmp / MARKER).write_text(json.dumps(params, indent=1) + "\n")  # last: the folder is complete
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless the build failed
    return out


_Plan = list[tuple[str, list[str], list[tuple[int, str]]]]  # wnid, train sources, (val number, val source)


def _plan(tiny: Path, classes: int, train_per_class: int, val_per_class: int) -> _Plan:
    """Which Tiny ImageNet files go where; short classes are an error naming them."""
    wnids = _read_lines(tiny / "wnids.txt")[:classes]
    if len(wnids) < classes:
        raise DatasetError(f"{tiny} has only {len(wnids)} classes, {classes} asked for")
    train: dict[str, list[str]] = {wnid: [] for wnid in wnids}
    for rel, _, label in _tiny_train_files(tiny, wnids):
        train[wnids[label]].append(str(tiny / rel))
    val: dict[str, list[tuple[int, str]]] = {wnid: [] for wnid in wnids}
    number = 0
    for rel, _, label in _tiny_val_files(tiny, wnids):  # annotation order: numbers interleave classes
        if len(val[wnids[label]]) < val_per_class:
            number += 1
            val[wnids[label]].append((number, str(tiny / rel)))
    short = [f"{w} ({len(train[w])} train, {len(val[w])} val)" for w in wnids
             if len(train[w]) < train_per_class or len(val[w]) < val_per_class]
    if short:
        raise DatasetError(f"Tiny ImageNet under {tiny} has fewer than {train_per_class} train / {val_per_class} val "
                           f"images for class(es) {', '.join(short[:5])}")
    return [(w, train[w][:train_per_class], val[w]) for w in wnids]


def _write(root: Path, plan: _Plan, size: int, synonyms: dict[str, str]) -> None:
    for wnid, train, val in plan:
        (root / "train" / wnid).mkdir(parents=True)
        (root / "val" / wnid).mkdir(parents=True)
        for i, source in enumerate(train):
            _upscale(source, root / "train" / wnid / f"{wnid}_{i}.JPEG", size)
        for number, source in val:
            _upscale(source, root / "val" / wnid / f"ILSVRC2012_val_{number:08d}.JPEG", size)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {synonyms.get(w, w)}\n" for w, _, _ in plan))


def _upscale(source: str, target: Path, size: int) -> None:
    with Image.open(source) as image:
        image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(
            target, quality=QUALITY)


def _synonyms(tiny: Path, wnids: list[str]) -> dict[str, str]:
    """wnid -> its words.txt synonyms ("goldfish, Carassius auratus"), for the wnids asked."""
    words = tiny / "words.txt"
    if not words.is_file():
        return {}
    wanted, found = set(wnids), {}
    for line in _read_lines(words):
        wnid, _, synonyms = line.partition("\t")
        if wnid in wanted:
            found[wnid] = synonyms.strip()
    return found


def _marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainables.data.imagenet_smoke",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", default="data/tiny-imagenet-200", help="Tiny ImageNet folder")
    parser.add_argument("--out", default="data/imagenet-smoke", help="folder to write (ImageNet layout)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="side in px of the upscaled images")
    args = parser.parse_args(argv)
    out = build_smoke(args.source, args.out, classes=args.classes, train_per_class=args.train_per_class,
                      val_per_class=args.val_per_class, size=args.size)
    print(f"{out}: {args.classes} classes, {args.train_per_class} train and {args.val_per_class} val images "
          f"each, {args.size} px")


if __name__ == "__main__":
    main()

"""`python -m trainables.corruptions generate --dataset NAME --out DIR [...]`: write the corrupted
test set (the official CIFAR-10-C / Tiny-ImageNet-C format) from the clean test split, so that the
benchmark is available without the multi-gigabyte download."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainables.corruptions.registry import BENCHMARK, SEVERITIES, TABLES, expand_corruptions
from trainables.corruptions.generate import GenerateRequest, generate_corrupted_set
from trainables.corruptions.protocols import PROTOCOLS
from trainables.corruptions.releases import NPY_DATASETS, TREE_DATASETS


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainables.corruptions", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a corrupted test set in the official format")
    gen.add_argument("--dataset", required=True, choices=[d for d in NPY_DATASETS + TREE_DATASETS
                                                          if d != "imagenet"])
    gen.add_argument("--out", required=True, type=Path, help="folder to write into")
    gen.add_argument("--data-root", type=Path, default=Path("data"), help="the clean dataset's root")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--corruptions", nargs="+", default=list(BENCHMARK), metavar="NAME",
                     help="corruption names or groups (noise, blur, weather, digital, benchmark, "
                          "extra, all); default: the 15 of the benchmark")
    gen.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    gen.add_argument("--num-classes", type=int, help="keep the first N classes")
    gen.add_argument("--image-size", type=int, help="resize the clean images first (pixels)")
    gen.add_argument("--table", choices=TABLES, help="severity table (default: from the image size)")
    gen.add_argument("--protocol", choices=tuple(PROTOCOLS),
                     help="a release's protocol: its severity table and whether cells take its JPEG round "
                          "trip (a tree dataset without it is written as .npy); overrides --table")
    gen.add_argument("--device", default="cpu", help="where to corrupt (cpu, cuda)")
    gen.add_argument("--batch-size", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        request = GenerateRequest(
            dataset=args.dataset, out=args.out, data_root=args.data_root,
            corruptions=expand_corruptions(args.corruptions), severities=tuple(args.severities),
            seed=args.seed, num_classes=args.num_classes, image_size=args.image_size,
            table=PROTOCOLS[args.protocol].table if args.protocol else args.table,
            jpeg=PROTOCOLS[args.protocol].jpeg if args.protocol else None,
            device=args.device, batch_size=args.batch_size,
        )
        out = generate_corrupted_set(request)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

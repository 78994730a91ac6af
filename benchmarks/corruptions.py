"""Corruption benchmark: validation against the authors' algorithm, throughput, 75-cell evaluation.

--validate    every corruption x severity, CIFAR (32 px) and Tiny ImageNet (64 px) tables, on the
              same real images (Tiny ImageNet val; 32 px = resized): mean PSNR against the clean
              image of ours and of the reference port (tests/corruption_reference.py), and the mean
              absolute difference (MAD, in 1/255) where the corruption is deterministic or its
              random draws are given to both sides.
--throughput  images/second per corruption: ours on a whole batch, the reference one image at a
              time, same images, severity 3 of the CIFAR table.
--evaluate    seconds to evaluate resnet18 on all 75 benchmark cells of a 10,000-image 32 px test
              set on the fly (corruption and model time reported apart).

    python benchmarks/corruptions.py --validate --throughput --evaluate --markdown docs/corruptions.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import corruption_reference as ref  # noqa: E402  (test-only port of the authors' code)

from trainables.corruptions import BENCHMARK, CORRUPTIONS, SEVERITIES, cell_generator, corrupt  # noqa: E402
from trainables.data import load_dataset  # noqa: E402
from trainables.evaluate import predict_logits  # noqa: E402
from trainables.models import create_model  # noqa: E402

TINY = REPO / ".cache" / "tiny-imagenet-200"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {gpu}; torch {torch.__version__}, "
            f"torch threads {torch.get_num_threads()}; reference motion blur via "
            f"{'ImageMagick (Wand)' if ref.HAVE_WAND else 'numpy _motion_blur'}")


def real_images(n: int, root: Path) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    images = load_dataset("tinyimagenet", root, "test", use_cache=False).images[:n]
    x64 = images.float() / 255
    x32 = torch.nn.functional.interpolate(x64, size=32, mode="bilinear", antialias=True)
    x32 = torch.round(x32.clamp(0, 1) * 255) / 255
    return {"cifar": (x32, ref.ours_u8(x32)), "tinyimagenet": (x64, ref.ours_u8(x64))}


# ---------------------------------------------------------------------------------------------


def validate(images: dict, n_pixel: int) -> list[str]:
    lines = ["| table | corruption | severity | PSNR ours (dB) | PSNR reference (dB) | difference (dB) | "
             "MAD (1/255) | check |", "|---|---|---|---|---|---|---|---|"]
    for table, (x, u8) in images.items():
        for name in CORRUPTIONS:
            exact = name in ref.DETERMINISTIC + ref.ALIGNED
            for severity in SEVERITIES:
                if exact:  # MAD on n_pixel images (the port is slow), PSNR on all
                    r = ref.compare(name, severity, table, x[:n_pixel], u8[:n_pixel], seed=severity)
                    whole = ref.compare(name, severity, table, x, u8, seed=severity) \
                        if name not in ref.ALIGNED else r
                    r = {**whole, "mad": r["mad"]}
                else:
                    r = ref.compare(name, severity, table, x, u8, seed=severity)
                diff = r["psnr_ours"] - r["psnr_ref"]
                ok = r["mad"] < 2 if r["mad"] is not None else abs(diff) < 0.5
                mad = f"{r['mad']:.3f}" if r["mad"] is not None else "random"
                lines.append(f"| {table} | {name} | {severity} | {r['psnr_ours']:.2f} | {r['psnr_ref']:.2f} "
                             f"| {diff:+.2f} | {mad} | {'ok' if ok else 'FAIL'} |")
                print(lines[-1], flush=True)
    return lines


def throughput(images: dict, n_ours: int, n_ref: int) -> list[str]:
    x, u8 = images["cifar"]
    reps = -(-n_ours // len(x))
    batch = x.repeat(reps, 1, 1, 1)[:n_ours]
    lines = [f"| corruption | ours (images/s, batch of {n_ours}) | reference (images/s, {n_ref} images one "
             "at a time) | speed-up |", "|---|---|---|---|"]
    total_ours = total_ref = 0.0
    for name in CORRUPTIONS:
        corrupt(batch[:8], name, 3, table="cifar")  # warm caches (kernels, frost textures)
        start = time.perf_counter()
        corrupt(batch, name, 3, table="cifar", generator=torch.Generator().manual_seed(0))
        t_ours = (time.perf_counter() - start) / n_ours
        start = time.perf_counter()
        ref.corrupt_batch(u8[:n_ref], name, 3, "cifar")
        t_ref = (time.perf_counter() - start) / n_ref
        if name in BENCHMARK:
            total_ours, total_ref = total_ours + t_ours, total_ref + t_ref
        lines.append(f"| {name} | {1 / t_ours:,.0f} | {1 / t_ref:,.0f} | {t_ref / t_ours:.1f}x |")
        print(lines[-1], flush=True)
    lines.append(f"| **the 15 of the benchmark, one image through each** | {1 / total_ours:,.0f} | "
                 f"{1 / total_ref:,.0f} | **{total_ref / total_ours:.1f}x** |")
    print(lines[-1], flush=True)
    return lines


def evaluate(n: int, device: str, model_images: int) -> list[str]:
    """75 cells on the fly on an n-image 32 px set: corruption time measured on all n images,
    model time on `model_images` images per cell and scaled to n (the CPU cannot run 750,000
    resnet18 forwards in a benchmark's time)."""
    dev = torch.device(device)
    images = load_dataset("synthetic", "unused", "test", synthetic_size=n, device=dev).images
    model = create_model("resnet18", 10).to(dev).eval()
    start = time.perf_counter()
    for name in BENCHMARK:
        for s in SEVERITIES:
            g = cell_generator(0, name, s, dev)
            for chunk in images.split(1000):
                corrupt(chunk.float() / 255, name, s, generator=g)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_corrupt = time.perf_counter() - start
    start = time.perf_counter()
    predict_logits(model, images[:model_images], (0.5,) * 3, (0.25,) * 3, num_classes=10, batch_size=500)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_model = (time.perf_counter() - start) * n / model_images * 75
    lines = [f"- corrupting all 75 cells of {n:,} images on {device}: {t_corrupt:.1f} s",
             f"- resnet18 forward for 75 x {n:,} images on {device}: {t_model:.1f} s "
             f"(measured on {model_images} images, scaled)",
             f"- total: {t_corrupt + t_model:.1f} s"]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--tiny-root", type=Path, default=TINY, help="extracted tiny-imagenet-200/")
    parser.add_argument("--images", type=int, default=512, help="images for the PSNR comparison")
    parser.add_argument("--pixel-images", type=int, default=64, help="images for the MAD comparison")
    parser.add_argument("--ours-batch", type=int, default=2000)
    parser.add_argument("--ref-images", type=int, default=100)
    parser.add_argument("--eval-images", type=int, default=10_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for ours (default 1: the same single core the reference "
                             "uses, and robust on a shared machine, where OpenMP threads collapse)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = [f"Machine: {machine()}.", ""]
    images = real_images(max(args.images, 100), args.tiny_root) if args.validate or args.throughput else {}
    if args.throughput:
        heading = f"## Throughput (CPU, {args.threads} thread(s), CIFAR table, severity 3)"
        sections += [heading, "", *throughput(images, args.ours_batch, args.ref_images), ""]
    if args.evaluate:
        sections += ["## 75-cell evaluation", "", *evaluate(args.eval_images, args.device, 500), ""]
    if args.validate:
        sections += ["## Validation against the reference", "",
                     f"{args.images} Tiny ImageNet val images (MAD on the first {args.pixel_images}).", "",
                     *validate({k: (x[:args.images], u8[:args.images]) for k, (x, u8) in images.items()},
                               args.pixel_images), ""]
    if args.markdown:
        write_between_markers(args.markdown, "\n".join(sections))


BEGIN, END = "<!-- generated by benchmarks/corruptions.py: begin -->", "<!-- generated: end -->"


def write_between_markers(path: Path, text: str) -> None:
    """Replace the generated part of `path` (between the markers), keeping the hand-written rest."""
    old = path.read_text() if path.is_file() else f"{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old = f"{old.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()

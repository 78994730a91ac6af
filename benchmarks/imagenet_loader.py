"""ImageNet-style training loaders side by side in one run: images/s of the streamed pipeline
(trainables.data.stream.train_batches: NVIDIA DALI, its CPU backend without a GPU, nvJPEG on one)
against torchvision's ImageFolder + DataLoader with the same augmentation.

dali         train_batches over imagenet_files(root, "train"): JPEG decode fused with the random-
             resized crop, resize, flip, uint8 (B, 3, S, S) on the device; `--threads` DALI threads.
torchvision  ImageFolder(root/train) + DataLoader(num_workers=--threads, persistent workers, shuffled,
             full batches): PIL decode, transforms.v2 RandomResizedCrop(S, antialias=True) and
             RandomHorizontalFlip on the PIL image, ToImage (uint8 CHW); on CUDA, pinned memory and
             .cuda(non_blocking=True), as a conventional training loop would.

The arms alternate `--repeats` times at each image size (these machines are noisy); medians and the
ratio are reported. Each timed run skips `--warmup` batches (pipeline build, worker start-up, first
reads) and times the next `--batches`, synchronising the device at the end. The folder defaults to
the smoke folder (`make imagenet-smoke`); point --root at a real ILSVRC-2012 folder to measure that.
`--consumer` also times a ResNet-50 training step on the device at the largest size: whether the
loader outruns what training consumes.

    python benchmarks/imagenet_loader.py                                  # CPU; CUDA too where present
    python benchmarks/imagenet_loader.py --root /data/imagenet --sizes 224 --batch-size 128 --threads 8
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from trainables.data import imagenet_files
from trainables.data.stream import train_batches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_dali(files, size: int, batch: int, warmup: int, batches: int, threads: int, device: torch.device,
              epoch: int) -> float:
    stream = train_batches(files, image_size=size, batch_size=batch, steps=warmup + batches, seed=0, epoch=epoch,
                           device=device, threads=threads)
    return _time(stream, warmup, batches, batch, device, to_device=False)


def torchvision_loader(root: Path, size: int, batch: int, threads: int, device: torch.device) -> DataLoader:
    transform = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
                            v2.ToImage(), v2.ToDtype(torch.uint8)])
    folder = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    return DataLoader(folder, batch_size=batch, shuffle=True, drop_last=True, num_workers=threads,
                      persistent_workers=threads > 0, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(0))


def time_torchvision(loader: DataLoader, warmup: int, batches: int, batch: int, device: torch.device) -> float:
    return _time(iter(loader), warmup, batches, batch, device, to_device=True)


def _time(stream, warmup: int, batches: int, batch: int, device: torch.device, to_device: bool) -> float:
    def take(count: int) -> None:
        for _ in range(count):
            images, labels = next(stream)
            if to_device:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    take(warmup)
    sync(device)
    start = time.perf_counter()
    take(batches)
    sync(device)
    elapsed = time.perf_counter() - start
    if hasattr(stream, "close"):
        stream.close()  # a generator: its DALI pipeline goes now
    return batch * batches / elapsed


def time_resnet50_step(size: int, batch: int, device: torch.device, steps: int = 3) -> float:
    """Training images/s of a ResNet-50 step (forward, backward, SGD) on uint8 batches normalised on the device."""
    model = torchvision.models.resnet50(num_classes=1000).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    times = []
    for _ in range(steps + 1):  # the first step is warm-up
        sync(device)
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images.float().div_(255)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times[1:])


def bench_size(root: Path, files, size: int, device: torch.device, args) -> dict:
    loader = torchvision_loader(root, size, args.batch_size, args.threads, device)
    runs: dict[str, list[float]] = {"dali": [], "torchvision": []}
    for repeat in range(args.repeats):
        runs["dali"].append(time_dali(files, size, args.batch_size, args.warmup, args.batches, args.threads,
                                      device, epoch=repeat))
        runs["torchvision"].append(time_torchvision(loader, args.warmup, args.batches, args.batch_size, device))
    del loader
    dali, tv = statistics.median(runs["dali"]), statistics.median(runs["torchvision"])
    return {"device": str(device), "size": size, "dali_img_s": dali, "torchvision_img_s": tv, "ratio": dali / tv,
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/imagenet-smoke", help="ILSVRC-2012 layout (train/<wnid>/*.JPEG)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="DALI threads = DataLoader workers")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--consumer", action="store_true", help="also time a ResNet-50 training step")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    root = Path(args.root).expanduser()
    files = imagenet_files(root, "train")
    if args.warmup + args.batches > len(files) // args.batch_size:
        parser.error(f"--warmup + --batches must be at most {len(files) // args.batch_size} (one epoch of "
                     f"{len(files)} files at batch {args.batch_size})")
    print(f"{root}: {len(files)} training files, {files.num_classes} classes; {platform.processor() or 'cpu'} "
          f"x{len(os.sched_getaffinity(0))}, torch {torch.__version__}, batch {args.batch_size}, {args.threads} "
          f"DALI threads / DataLoader workers, {args.repeats} repeats alternating, medians")
    results = []
    for device in map(torch.device, args.devices):
        for size in args.sizes:
            r = bench_size(root, files, size, device, args)
            results.append(r)
            print(f"{device.type:>4} {size:4d} px: dali {r['dali_img_s']:8.0f} img/s   torchvision DataLoader "
                  f"{r['torchvision_img_s']:8.0f} img/s   ratio x{r['ratio']:.2f}")
    consumer = {}
    if args.consumer:
        for device in map(torch.device, args.devices):
            rate = time_resnet50_step(max(args.sizes), args.batch_size, device)
            consumer[str(device)] = rate
            print(f"{device.type:>4} ResNet-50 training step at {max(args.sizes)} px, batch {args.batch_size}: "
                  f"{rate:.1f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": datetime.date.today().isoformat(), "root": str(root),
                                               "files": len(files), "args": vars(args), "results": results,
                                               "resnet50_step_img_s": consumer}, indent=1))


if __name__ == "__main__":
    main()

"""Training throughput: this pipeline against a conventional one, in one run, same model and device.

ours          uint8 split on the device; batches drawn, augmented as whole-batch tensor ops,
              normalised and mollified there (trainables.batches.make_batch).
conventional  a torch DataLoader over PIL images applying torchvision transforms per image on the
              CPU (flip, crop with 4 px padding, rotation 15 degrees; what `fcr` is), copied to the
              device, then mollified by boolean-mask indexing as in the authors' code.

Also reports the share of our step time spent in mollification.

    python benchmarks/throughput.py                      # resnet18 and smallcnn at 32 px
    python benchmarks/throughput.py --models resnet18 --steps 100 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from trainables.augment import create_augmentation
from trainables.batches import make_batch
from trainables.config import TrialConfig
from trainables.data import ImageSet, load_dataset
from trainables.losses import soft_cross_entropy
from trainables.models import create_model
from trainables.mollify import blur, blur_label_weight, degrade_labels, mollify, noise, noise_label_weight
from trainables.pipeline import autocast, normalize, resolve_device


# --- the conventional pipeline -------------------------------------------------------------------

class PilDataset(Dataset):
    """What torchvision's CIFAR10 does: a PIL image per item, transformed per image."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def conventional_loader(data: ImageSet, batch_size: int, workers: int) -> DataLoader:
    transform = v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomCrop(data.images.shape[-1], padding=4), v2.RandomRotation(15),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(data.mean, data.std),
    ])
    images = data.images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C) as PIL wants
    return DataLoader(PilDataset(images, data.labels.cpu().numpy(), transform), batch_size=batch_size,
                      shuffle=True, drop_last=True, num_workers=workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0)


def masked_mollify(x: torch.Tensor, y: torch.Tensor, cfg: TrialConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' structure: numpy role choice, torch.distributions Beta, boolean-mask writes."""
    roles = np.random.choice(list(cfg.roles), x.shape[0])
    t = torch.distributions.Beta(cfg.alpha, cfg.beta).sample([x.shape[0]]).to(x)
    t[torch.from_numpy(roles == "x").to(x.device)] = 0
    x, y = x.clone(), y.clone()
    n, b = torch.from_numpy(roles == "n").to(x.device), torch.from_numpy(roles == "b").to(x.device)
    x[n] = noise(x[n], t[n], torch.randn_like(x[n]))
    x[b] = blur(x[b], t[b])
    y[n] = degrade_labels(y[n], noise_label_weight(t[n]))
    y[b] = degrade_labels(y[b], blur_label_weight(t[b]))
    return x, y


# --- timing --------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sgd_step(model, optimizer, x, y, device, precision) -> None:
    with autocast(device, precision):
        logits = model(x)
    loss = soft_cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_ours(cfg: TrialConfig, data: ImageSet, model, optimizer, steps: int, warmup: int) -> float:
    device, augment = data.images.device, create_augmentation(cfg.augment)
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(len(data), device=device, generator=generator)
    per_epoch = len(data) // cfg.batch_size
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        i = step % per_epoch
        x, y = make_batch(cfg, data, order[i * cfg.batch_size : (i + 1) * cfg.batch_size], generator, augment)
        sgd_step(model, optimizer, x, y, device, cfg.precision)
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def time_conventional(cfg: TrialConfig, data: ImageSet, model, optimizer, steps: int, warmup: int,
                      workers: int) -> float:
    device = data.images.device
    loader = conventional_loader(data, cfg.batch_size, workers)
    done, start = 0, None
    while done < warmup + steps:
        for x, labels in loader:
            if done == warmup:
                sync(device)
                start = time.perf_counter()
            x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            x, y = masked_mollify(x, F.one_hot(labels, data.num_classes).float(), cfg)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            sgd_step(model, optimizer, x, y, device, cfg.precision)
            done += 1
            if done == warmup + steps:
                break
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def mollify_share(cfg: TrialConfig, data: ImageSet, images_per_s: float, reps: int = 50) -> float:
    """Seconds of one `mollify` call on a normalised batch over the seconds of one whole step."""
    device = data.images.device
    g = torch.Generator(device=device).manual_seed(0)
    x = normalize(data.images[: cfg.batch_size].float() / 255, data.mean, data.std)
    y = F.one_hot(data.labels[: cfg.batch_size], data.num_classes).float()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        mollify(x, y, roles=cfg.roles, beta=cfg.beta, generator=g)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / (cfg.batch_size / images_per_s)


def fresh(name: str, num_classes: int, device: torch.device):
    torch.manual_seed(0)
    model = create_model(name, num_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def bench_model(name: str, data: ImageSet, args: argparse.Namespace) -> dict:
    cfg = TrialConfig(model=name, augment="fcr", batch_size=args.batch_size, precision="auto")
    device = data.images.device
    rows = {}
    # Alternate the two pipelines so that drift in machine load hits both alike.
    for rep in range(args.repeats):
        for label, run in (("ours", lambda m, o: time_ours(cfg, data, m, o, args.steps, args.warmup)),
                           ("conventional", lambda m, o: time_conventional(cfg, data, m, o, args.steps,
                                                                           args.warmup, args.workers))):
            model, optimizer = fresh(name, data.num_classes, device)
            rows.setdefault(label, []).append(run(model, optimizer))
    ours, conv = statistics.median(rows["ours"]), statistics.median(rows["conventional"])
    return {"model": name, "ours_img_s": ours, "conventional_img_s": conv, "speedup": ours / conv,
            "mollify_share": mollify_share(cfg, data, ours), "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "smallcnn"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset("synthetic", "", "train", image_size=32, device=device, synthetic_size=args.images)
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    print(f"device {device} ({machine}), torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.steps} timed steps x {args.repeats} repeats, {args.workers} loader workers")
    results = []
    for name in args.models:
        r = bench_model(name, data, args)
        results.append(r)
        print(f"{name:>10}: ours {r['ours_img_s']:8.0f} img/s   conventional {r['conventional_img_s']:8.0f} img/s   "
              f"speed-up x{r['speedup']:.2f}   mollification {100 * r['mollify_share']:.1f}% of a step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "machine": machine, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

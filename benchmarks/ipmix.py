"""IPMix and the JSD loss: what they cost, side by side in one run.

augmentation  images/s of `ipmix` batched on the device (trainables.augment) against the reference's
              per-image pipeline: a torch DataLoader whose dataset runs IPMix image by image with PIL
              and tensor ops, drawing from numpy/random, as `hzlsaber/IPMix`'s `IPMixDataset` does
              (written here after its structure: chains of PIL ops or patch mixings, uint8 between
              steps). Both at 32 px, from uint8 images, with the same mixing-set size.
training      training images/s of `fcr+ipmix` with mollification, without and with `jsd` (three
              views through the network per image), the trial's own step (trainables.train).

    python benchmarks/ipmix.py                        # CPU, smallcnn
    python benchmarks/ipmix.py --device cuda --models resnet18 smallcnn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from trainables.augment import create_augmentation
from trainables.augment.mixing_set import procedural_mixing_set
from trainables.batches import build_augmentation, make_batch, make_views
from trainables.config import TrialConfig
from trainables.data import ImageSet, load_dataset
from trainables.losses import create_loss
from trainables.models import create_model
from trainables.pipeline import resolve_device
from trainables.train import forward_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the reference-style per-image pipeline ------------------------------------------------------------

def _level(severity: float) -> float:
    return np.random.uniform(0.1, severity)


def _signed(value: float) -> float:
    return -value if np.random.uniform() > 0.5 else value


def _affine(img: Image.Image, data: tuple) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, data, resample=Image.BILINEAR)


IMAGE_OPS = {  # the reference's image-level ops at severity `s` (its int_parameter / float_parameter)
    "equalize": lambda img, s: ImageOps.equalize(img),
    "posterize": lambda img, s: ImageOps.posterize(img, 4 - int(_level(s) * 4 / 10)),
    "rotate": lambda img, s: img.rotate(_signed(int(_level(s) * 30 / 10)), resample=Image.BILINEAR),
    "solarize": lambda img, s: ImageOps.solarize(img, 256 - int(_level(s) * 256 / 10)),
    "shear_x": lambda img, s: _affine(img, (1, _signed(_level(s) * 0.3 / 10), 0, 0, 1, 0)),
    "shear_y": lambda img, s: _affine(img, (1, 0, 0, _signed(_level(s) * 0.3 / 10), 1, 0)),
    "translate_x": lambda img, s: _affine(img, (1, 0, _signed(int(_level(s) * img.size[0] / 3 / 10)), 0, 1, 0)),
    "translate_y": lambda img, s: _affine(img, (1, 0, 0, 0, 1, _signed(int(_level(s) * img.size[1] / 3 / 10)))),
    "mirror": lambda img, s: ImageOps.mirror(img),
    "invert": lambda img, s: ImageOps.invert(img),
}


def _coefficients(beta: float) -> tuple[float, float]:
    if np.random.random() < 0.5:
        return np.random.beta(beta, 1), np.random.beta(1, beta)
    return 1 + np.random.beta(1, beta), -np.random.beta(1, beta)


def _pixel_mix(p: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    op = random.choice(("add", "multiply", "random_pixels", "random_elems"))
    if op == "add":
        a, b = _coefficients(beta)
        return ((a * (p * 2 - 1) + b * (q * 2 - 1)) + 1) / 2
    if op == "multiply":
        a, b = _coefficients(beta)
        return (p * 2) ** a * (q * 2).clip(1e-37) ** b / 2
    shape = (1, *p.shape[1:]) if op == "random_pixels" else p.shape
    mask = torch.rand(shape) < torch.rand([])
    return mask * p + (1 - mask.float()) * q


def _patch_mix(img: Image.Image, picture: Image.Image, side: int, beta: float) -> Image.Image:
    w, h = img.size
    left, top = random.randint(0, w - side), random.randint(0, h - side)
    right, bottom = (left + side, top + side) if random.random() > 0.5 else \
        (left + random.randint(2, side), top + random.randint(2, side))
    box = (left, top, right, bottom)
    to_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
    mixed = _pixel_mix(to_tensor(img.crop(box)), to_tensor(picture.crop(box)), beta)
    out = img.copy()
    out.paste(Image.fromarray(mixed.clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()), box[:2])
    return out


def reference_ipmix(img: Image.Image, picture: Image.Image, severity: float = 3, beta: float = 3) -> torch.Tensor:
    """One image through the reference's structure: 3 chains, image or patch, 0..3 steps each."""
    as_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
    weights, m = np.float32(np.random.dirichlet([1] * 3)), np.float32(np.random.beta(1, 1))
    mix = torch.zeros(3, *img.size[::-1])
    for k in range(3):
        chain = img.copy()
        patch = random.choice(("image", "patch")) == "patch"
        for _ in range(np.random.randint(4)):
            if patch:
                chain = _patch_mix(chain, picture, random.choice((4, 8, 16, 32)), beta)
            else:
                chain = IMAGE_OPS[random.choice(list(IMAGE_OPS))](chain, severity)
        mix += weights[k] * as_tensor(chain)
    return (1 - m) * as_tensor(img) + m * mix


class ReferenceIPMixDataset(Dataset):
    """The reference's `IPMixDataset` without JSD: per item a PIL image, a random mixing picture
    (a random 32 px crop of a 36 px one), `reference_ipmix`."""

    def __init__(self, images: np.ndarray, pictures: np.ndarray) -> None:
        self.images, self.pictures = images, pictures

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        top, left = np.random.randint(0, 5, size=2)
        picture = Image.fromarray(self.pictures[np.random.randint(len(self.pictures))][top:top + 32, left:left + 32])
        return reference_ipmix(Image.fromarray(self.images[i]), picture)


def time_reference(data: ImageSet, pictures: torch.Tensor, batch: int, batches: int, workers: int) -> float:
    images = data.images.permute(0, 2, 3, 1).cpu().numpy()
    dataset = ReferenceIPMixDataset(images, pictures.permute(0, 2, 3, 1).cpu().numpy())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        worker_init_fn=lambda i: np.random.seed(torch.initial_seed() % 2**32))
    iterator = iter(loader)
    next(iterator)  # workers started, first batch in
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def time_batched(data: ImageSet, batch: int, batches: int) -> float:
    device, augment = data.images.device, create_augmentation("ipmix")
    generator = torch.Generator(device=device).manual_seed(0)
    x, y = data.images[:batch].float() / 255, torch.zeros(batch, data.num_classes, device=device)
    augment(x, y, generator)  # the mixing set is generated on the first call
    sync(device)
    start = time.perf_counter()
    for i in range(batches):
        x = data.images[(i * batch) % (len(data) - batch):][:batch].float() / 255
        augment(x, y, generator)
    sync(device)
    return batches * batch / (time.perf_counter() - start)


# --- training with and without JSD ---------------------------------------------------------------------

def time_training(cfg: TrialConfig, data: ImageSet, steps: int, warmup: int) -> float:
    device = data.images.device
    torch.manual_seed(0)
    net = create_model(cfg.model, data.num_classes).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    (augment, mixer), loss_fn = build_augmentation(cfg), create_loss(cfg.loss)
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(len(data), device=device, generator=generator)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        index = order[(step * cfg.batch_size) % (len(data) - cfg.batch_size):][: cfg.batch_size]
        x, y = (make_batch(cfg, data, index, generator, augment) if mixer is None
                else make_views(cfg, data, index, generator, augment, mixer))  # fmt: skip
        loss, _ = forward_loss(cfg, net, x, y, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def bench_training(model: str, data: ImageSet, args: argparse.Namespace) -> dict:
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # alternate the arms so that drift in machine load hits both
        for jsd in (False, True):
            cfg = TrialConfig(model=model, augment="fcr+ipmix", jsd=jsd, mollify=True, batch_size=args.batch_size,
                              device=str(data.images.device))  # fmt: skip
            runs.setdefault(f"jsd={jsd}", []).append(time_training(cfg, data, args.steps, args.warmup))
    without, with_jsd = statistics.median(runs["jsd=False"]), statistics.median(runs["jsd=True"])
    return {"model": model, "without_jsd_img_s": without, "with_jsd_img_s": with_jsd,
            "ratio": with_jsd / without, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["smallcnn"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="augmentation: timed batches per arm")
    parser.add_argument("--steps", type=int, default=20, help="training: timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset("synthetic", "", "train", image_size=32, device=device, synthetic_size=10_000)
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    print(f"device {device} ({machine}), torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.workers} loader workers, {args.repeats} repeats, medians")
    pictures = procedural_mixing_set((32, 32), torch.device("cpu"))
    augmentation: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        augmentation.setdefault("batched", []).append(time_batched(data, args.batch_size, args.batches))
        augmentation.setdefault("reference", []).append(
            time_reference(data, pictures, args.batch_size, args.batches, args.workers))
    batched, reference = statistics.median(augmentation["batched"]), statistics.median(augmentation["reference"])
    print(f"ipmix: batched {batched:8.0f} img/s   reference per image ({args.workers} workers) "
          f"{reference:8.0f} img/s   speed-up x{batched / reference:.1f}")
    training = [bench_training(model, data, args) for model in args.models]
    for r in training:
        print(f"{r['model']:>10}: fcr+ipmix+mollify without JSD {r['without_jsd_img_s']:7.0f} img/s   with JSD "
              f"{r['with_jsd_img_s']:7.0f} img/s   ratio {r['ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "machine": machine, "augmentation": augmentation,
                       "training": training}, f, indent=2)


if __name__ == "__main__":
    main()

"""The validation split's share of a trial's wall time, measured side by side in one command.

The same short trial (same steps per epoch, so the held-out images do not change the training work)
runs without a validation split and with one (`valid_per_class` images per class held out: the
clean metrics on all of them and the 4 extra corruptions x 5 severities on the first
`valid_corrupt_images`, after every evaluated epoch), alternating, `--repeats` times each; medians
are reported. The trial's own test evaluation (the clean test set every epoch, no corruption grid
unless --test-grid) runs in both. Also reported: one validation pass on its own against one
training epoch, to extrapolate to other `eval_every` and epoch lengths.

    python benchmarks/validation_cost.py                                   # CPU, smallcnn, CIFAR-sized
    python benchmarks/validation_cost.py --model resnet18 --device cuda --steps 390 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.evaluation import evaluate_validation
from trainables.pipeline import resolve_device
from trainables.splits import load_splits
from trainables.train import run_trial


def trial_config(args: argparse.Namespace, valid_per_class: int) -> TrialConfig:
    return TrialConfig(dataset="synthetic", train_size=args.train_size, model=args.model, epochs=args.epochs,
                       batch_size=args.batch_size, limit_train_batches=args.steps, device=args.device,
                       corruption_source="on_the_fly" if args.test_grid else "none",
                       limit_corrupt_images=args.valid_corrupt_images, valid_per_class=valid_per_class,
                       valid_corrupt_images=args.valid_corrupt_images)


def trial_seconds(cfg: TrialConfig) -> tuple[float, float]:
    """(wall time of the whole trial, mean training seconds per epoch)."""
    start = time.perf_counter()
    result = run_trial(cfg)
    wall = time.perf_counter() - start
    images = (cfg.limit_train_batches or 1) * cfg.batch_size
    return wall, statistics.mean(images / h["train/images_per_s"] for h in result.history)


def validation_pass_seconds(cfg: TrialConfig, repeats: int) -> float:
    """One `evaluate_validation` call on a fresh network: the cost added per evaluated epoch."""
    device = resolve_device(cfg.device)
    _, valid, _ = load_splits(cfg, device)
    model = run_trial(cfg.replace(epochs=1, limit_train_batches=1, valid_per_class=0)).model.to(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_validation(cfg, model, valid)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-size", type=int, default=50_000, help="synthetic training images (CIFAR: 50,000)")
    parser.add_argument("--steps", type=int, default=100, help="training batches per epoch (CIFAR at 128: 390)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--valid-per-class", type=int, default=50, help="as the hpo and pareto presets")
    parser.add_argument("--valid-corrupt-images", type=int, default=500)
    parser.add_argument("--test-grid", action="store_true", help="also evaluate the 75-cell test grid at the end")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    plain, held_out = trial_config(args, 0), trial_config(args, args.valid_per_class)
    walls: dict[str, list[float]] = {"without": [], "with": []}
    epoch_s = []
    for _ in range(args.repeats):  # alternate: the machine's load drifts
        for name, cfg in (("without", plain), ("with", held_out)):
            wall, per_epoch = trial_seconds(cfg)
            walls[name].append(wall)
            epoch_s.append(per_epoch)
    without, with_ = statistics.median(walls["without"]), statistics.median(walls["with"])
    one_pass = validation_pass_seconds(held_out, args.repeats)
    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "device": str(resolve_device(args.device)), "args": vars(args), "walls": walls,
              "without_s": without, "with_s": with_, "ratio": with_ / without, "share": (with_ - without) / with_,
              "validation_pass_s": one_pass, "train_epoch_s": statistics.median(epoch_s)}
    print(f"{result['machine']} on {result['device']}: {args.model}, {args.epochs} epochs of {args.steps} "
          f"batches of {args.batch_size}, validation after every epoch")
    print(f"trial without validation {without:.1f} s, with {with_:.1f} s (median of {args.repeats}): "
          f"x{result['ratio']:.3f}, validation {100 * result['share']:.1f}% of the trial's wall time")
    print(f"one validation pass ({args.valid_per_class} images a class clean, 20 corrupted cells of "
          f"{args.valid_corrupt_images}) {one_pass:.2f} s against one training epoch {result['train_epoch_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The GPU check: everything the platform's GPU path should prove, in one command, in under 8
minutes on one GPU, on a machine with torch and torchvision but no Ray, MLflow or Optuna (they are
refused here, as they would be there). Writes one report, `gpu-check.json` and `gpu-check.md`,
into --out (default $GPU_CHECK_OUT, else ./gpu-check), rewritten after every section so that a run
cut short still leaves what it measured.

Sections (each can fail or be skipped, with its reason, without stopping the others):
  environment   torch, torchvision, the device; the optional modules present or missing
  gpu_tests     every test marked for the GPU (marker `gpu`, or a skipif naming CUDA/a GPU), with outcomes
  presets       a short trial of each paper preset's configuration (synthetic data of the preset
                dataset's size and classes): finite loss, bf16 on, host syncs in the hot path
                (CUDA sync debug mode: must be none), peak memory, images/s
  throughput    training images/s, the on-device batch pipeline against the conventional per-image
                DataLoader (benchmarks/throughput.py): smallcnn and resnet18 at 32 px, PreActResNet-50
                in bf16 channels-last without and with torch.compile; mollification's share of a step
  corruptions   the 75 benchmark cells over 10,000 images on the device; on-the-fly images/s per
                corruption against the reference implementation one image at a time (when its
                scipy/scikit-image/OpenCV are installed)
  ipmix         batched IPMix against the reference's per-image pipeline; training with and without
                the JSD loss (benchmarks/ipmix.py)
  imagenet      the streaming ImageNet loader's images/s, where the repository has one
No section starts after --budget seconds (default 450), so the report is out in about 8 minutes.
One file of about 600 lines on purpose: it is carried to a bare GPU machine and run whole, with
nothing of the project's tooling around it.

    make gpu-check                                                   # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc   # the dry run (make test runs it)

--quick: tiny sizes; on the CPU also smallcnn in place of PreActResNet-50 and torch.compile's
eager backend (no C++ toolchain, seconds instead of minutes): the same code path, not the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO), str(BENCH), str(REPO / "tests")]

import gpu_select  # noqa: E402  (the pytest plugin; also refuses the forbidden imports here)

FORBIDDEN = ("ray", "mlflow", "optuna")  # absent on the GPU machine
OPTIONAL = ("yaml", "torchmetrics", "numpy", "PIL", "pytest", "hypothesis", "scipy", "skimage", "cv2")
PAPER_PRESETS = ("paper-baselines", "paper-amount", "paper-schedule", "paper-type", "evidence-gpu",
                 "evidence-gpu-reduced", "paper-imagenet")
DATASET_SHAPES = {"cifar10": (32, 10), "cifar100": (32, 100), "tinyimagenet": (64, 200), "synthetic": (32, 10),
                  "imagenet": (224, 1000)}


@dataclass(frozen=True)
class Sizes:
    """How much each section runs: the full check on a GPU, or the quick dry run."""

    batch: int = 128
    images: int = 10_000  # synthetic training images for the throughput sections
    steps: int = 50
    warmup: int = 10
    repeats: int = 2
    workers: int = min(8, os.cpu_count() or 1)
    grid_images: int = 10_000
    grid_model_images: int = 10_000
    ref_images: int = 100
    ipmix_batches: int = 20
    preset_steps: int = 200
    preset_train: int = 10_000
    stand_in: str | None = None  # a model run in place of every other one (the quick dry run: smallcnn)
    max_image_size: int = 512  # the quick dry run: 32 px everywhere (one IPMix mixing set, made once)
    compile_backend: str = "inductor"
    test_timeout: int = 180
    budget_s: float = 450.0  # a section that would start later than this is skipped: the report is out by 8 min

    def model(self, name: str) -> str:
        return self.stand_in or name


QUICK = Sizes(batch=16, images=256, steps=2, warmup=1, repeats=1, workers=0, grid_images=16, grid_model_images=16,
              ref_images=2, ipmix_batches=2, preset_steps=3, preset_train=64, stand_in="smallcnn", max_image_size=32,
              compile_backend="eager", test_timeout=300, budget_s=900.0)


# --- the report ------------------------------------------------------------------------------------

class Report:
    """Sections in order, each {status: ok | failed | skipped, seconds, result | error | reason}."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.sections = out, meta, {}
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[], Any], late: bool = False) -> None:
        if late:
            self.sections[name] = {"status": "skipped", "reason": "over the time budget (--budget)", "seconds": 0.0}
            self.write()
            return
        print(f"[gpu-check] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            result = fn()
            entry = ({"status": "skipped", "reason": result.reason} if isinstance(result, Skip)
                     else {"status": "ok", "result": result})
        except Exception as err:
            entry = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                     "traceback": traceback.format_exc(limit=6)}
        entry["seconds"] = round(time.perf_counter() - start, 1)
        self.sections[name] = entry
        print(f"[gpu-check] {name}: {entry['status']} ({entry['seconds']} s)"
              + (f": {entry.get('error') or entry.get('reason')}" if entry["status"] != "ok" else ""), flush=True)
        self.write()

    def data(self) -> dict[str, Any]:
        return {**self.meta, "forbidden_imported": sorted(m for m in FORBIDDEN if m in sys.modules),
                "forbidden_attempts": forbidden_attempts(self.meta.get("forbidden_log")),
                "sections": self.sections}

    def write(self) -> None:
        data = self.data()
        (self.out / "gpu-check.json").write_text(json.dumps(data, indent=2, default=str))
        (self.out / "gpu-check.md").write_text(markdown(data))


@dataclass(frozen=True)
class Skip:
    reason: str


def forbidden_attempts(log: str | None) -> list[str]:
    return sorted(set(Path(log).read_text().split())) if log and Path(log).is_file() else []


# --- sections --------------------------------------------------------------------------------------

def environment(device: Any) -> dict[str, Any]:
    import torch
    import torchvision

    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "device": str(device), "cpus": os.cpu_count(), "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "modules": {m: importlib.util.find_spec(m) is not None for m in OPTIONAL}}
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip()
    return info


def gpu_test_files() -> list[Path]:
    """The test files that hold a GPU test (either style), so that no other file is collected: those
    import Ray, MLflow or Optuna, which the GPU machine lacks."""
    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        text = path.read_text()
        if "cuda.is_available" in text or "mark.gpu" in text:
            found.append(path)
    return found


def gpu_tests(sizes: Sizes, out: Path, forbidden_log: str) -> dict[str, Any]:
    files = gpu_test_files()
    if not files:
        return Skip("no test file holds a GPU test")
    xml = out / "gpu-tests.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(BENCH), str(REPO / "tests")]),
           "GPU_CHECK_FORBID": ",".join(FORBIDDEN), "GPU_CHECK_FORBIDDEN_LOG": forbidden_log}
    cmd = [sys.executable, "-m", "pytest", "-p", "gpu_select", "-o", "addopts=", "-p", "no:cacheprovider", "-q",
           "-rA", f"--junitxml={xml}", *map(str, files)]
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=sizes.test_timeout)
        code, tail = done.returncode, (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired as err:
        code, tail = "timeout", str(err.stdout or "")[-3000:]
    tests = read_junit(xml) if xml.is_file() else []
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    if code not in (0, 5) and counts["failed"] == counts["error"] == 0:  # 5: nothing collected
        counts["error"] += 1
    return {"files": [p.name for p in files], "exit_code": code, "counts": counts, "total": len(tests),
            "tests": tests, "output_tail": tail}


def read_junit(path: Path) -> list[dict[str, str]]:
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (node.get("message") or "")[:300]
                break
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        out.append({"test": name, "outcome": outcome, "message": message, "seconds": case.get("time", "")})
    return out


def throughput_rows(device: Any, sizes: Sizes) -> list[dict[str, Any]]:
    import torch
    import throughput as tp

    from trainables.config import TrialConfig
    from trainables.data import load_dataset

    data = load_dataset("synthetic", "", "train", image_size=32, device=device, synthetic_size=sizes.images)
    variants = [("smallcnn", "auto", None), ("resnet18", "auto", None), ("preactresnet50", "bf16", None),
                ("preactresnet50", "bf16", sizes.compile_backend)]
    rows = []
    for model, precision, backend in variants:
        model = sizes.model(model)
        cfg = TrialConfig(model=model, augment="fcr", batch_size=sizes.batch, precision=precision,
                          device=str(device))
        runs: dict[str, list[float]] = {"ours": [], "conventional": []}
        # One network per variant, kept across the runs: a compiled one compiles once (a fresh
        # network would recompile: a minute each for PreActResNet-50).
        net, optimizer = tp.fresh(model, data.num_classes, device)
        if backend:
            net = torch.compile(net, backend=backend)
        for _ in range(sizes.repeats):  # alternated: drift in load hits both alike
            runs["ours"].append(tp.time_ours(cfg, data, net, optimizer, sizes.steps, sizes.warmup))
            runs["conventional"].append(tp.time_conventional(cfg, data, net, optimizer, sizes.steps, sizes.warmup,
                                                             sizes.workers))
        ours, conv = statistics.median(runs["ours"]), statistics.median(runs["conventional"])
        rows.append({"model": model, "precision": precision, "channels_last": device.type == "cuda",
                     "compile": backend or "no", "ours_img_s": round(ours), "conventional_img_s": round(conv),
                     "speedup": round(ours / conv, 2), "mollify_share": round(tp.mollify_share(cfg, data, ours), 4),
                     "runs": runs})
    return rows


def corruption_grid(device: Any, sizes: Sizes) -> dict[str, Any]:
    """The 75 benchmark cells on the device: corrupting all `grid_images`, and resnet18's forward
    passes over them (measured on `grid_model_images` per cell, scaled)."""

    from trainables.corruptions import BENCHMARK, CORRUPTIONS, SEVERITIES, cell_generator, corrupt
    from trainables.data import load_dataset
    from trainables.evaluate import predict_logits
    from trainables.models import create_model

    images = load_dataset("synthetic", "", "test", synthetic_size=sizes.grid_images, device=device).images
    model = create_model(sizes.model("resnet18"), 10).to(device).eval()
    corrupt(images[:8].float() / 255, BENCHMARK[0], 1, generator=cell_generator(0, BENCHMARK[0], 1, device))
    sync(device)
    start = time.perf_counter()
    for name in BENCHMARK:
        for s in SEVERITIES:
            g = cell_generator(0, name, s, device)
            for chunk in images.split(1000):
                corrupt(chunk.float() / 255, name, s, generator=g)
    sync(device)
    corrupt_s = time.perf_counter() - start
    n = min(sizes.grid_model_images, len(images))
    start = time.perf_counter()
    predict_logits(model, images[:n], (0.5,) * 3, (0.25,) * 3, num_classes=10, batch_size=500)
    sync(device)
    model_s = (time.perf_counter() - start) * len(images) / n * len(BENCHMARK) * len(SEVERITIES)
    return {"cells": len(BENCHMARK) * len(SEVERITIES), "images": len(images), "corrupt_s": round(corrupt_s, 2),
            "resnet18_forward_s": round(model_s, 2), "total_s": round(corrupt_s + model_s, 2),
            "per_corruption": corruption_speed(device, sizes, [c for c in CORRUPTIONS if c in BENCHMARK])}


def corruption_speed(device: Any, sizes: Sizes, names: list[str]) -> dict[str, Any]:
    """Images/s per corruption at severity 3: ours on a whole batch on the device, the reference
    one image at a time on the CPU (tests/corruption_reference.py, when its modules are here)."""
    import torch

    from trainables.corruptions import corrupt

    x = torch.rand(min(sizes.grid_images, 1000), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = (x * 255).round() / 255
    try:
        import corruption_reference as ref
    except ImportError as err:
        ref, missing = None, str(err)
    rows = {}
    for name in names:
        xd = x.to(device)
        corrupt(xd[:8], name, 3, table="cifar")  # warm caches (kernels, frost textures)
        sync(device)
        start = time.perf_counter()
        corrupt(xd, name, 3, table="cifar", generator=torch.Generator(device=device).manual_seed(0))
        sync(device)
        row = {"ours_img_s": round(len(x) / (time.perf_counter() - start))}
        if ref is not None:
            u8 = ref.ours_u8(x[: sizes.ref_images])
            start = time.perf_counter()
            ref.corrupt_batch(u8, name, 3, "cifar")
            row["reference_img_s"] = round(sizes.ref_images / (time.perf_counter() - start), 1)
            row["speedup"] = round(row["ours_img_s"] / row["reference_img_s"], 1)
        rows[name] = row
    return {"rows": rows, "reference": "tests/corruption_reference.py on the CPU, one image at a time"
            if ref is not None else f"not run: {missing}"}


def ipmix_section(device: Any, sizes: Sizes) -> dict[str, Any]:
    import ipmix as bench

    from trainables.augment.mixing_set import procedural_mixing_set
    from trainables.data import load_dataset

    import torch

    data = load_dataset("synthetic", "", "train", image_size=32, device=device, synthetic_size=sizes.images)
    pictures = procedural_mixing_set((32, 32), torch.device("cpu"))
    batched = [bench.time_batched(data, sizes.batch, sizes.ipmix_batches) for _ in range(sizes.repeats)]
    reference = [bench.time_reference(data, pictures, sizes.batch, sizes.ipmix_batches, sizes.workers)
                 for _ in range(sizes.repeats)]
    args = argparse.Namespace(repeats=sizes.repeats, batch_size=sizes.batch, steps=sizes.steps, warmup=sizes.warmup)
    training = [bench.bench_training(sizes.model(m), data, args) for m in ("smallcnn", "resnet18")]
    return {"batched_img_s": round(statistics.median(batched)), "reference_img_s": round(statistics.median(reference)),
            "reference_workers": sizes.workers, "speedup": round(statistics.median(batched) / statistics.median(reference), 2),
            "training": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "runs"}
                         for r in training]}


def imagenet_section(device: Any, sizes: Sizes) -> Any:
    """The streaming loader (NVIDIA DALI, nvJPEG on the GPU) against ImageFolder + DataLoader at
    224 px, on a folder of synthetic 256 px JPEGs written here (benchmarks/imagenet_loader.py).
    The ResNet-50 step it feeds is timed in the presets section (paper-imagenet)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return Skip("NVIDIA DALI is not installed on this machine (pip install nvidia-dali-cuda130; the project's "
                    "install has it): the streaming loader's GPU rate is not measured here")
    import tempfile

    import imagenet_loader
    import torch
    import torchvision

    from trainables.data import imagenet_files

    size, batch = (32, 8) if sizes is QUICK else (224, 128)
    per_class, classes = (16, 4) if sizes is QUICK else (128, 8)
    with tempfile.TemporaryDirectory(prefix="gpu-check-imagenet-") as tmp:
        root = Path(tmp)
        generator = torch.Generator().manual_seed(0)
        for c in range(classes):
            folder = root / "train" / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):  # smooth images: JPEG sizes as photographs, not as noise
                image = torch.rand((3, 8, 8), generator=generator).mul(255).byte()
                image = torchvision.transforms.v2.functional.resize(image, [256, 256], antialias=True)
                (folder / f"n{c:08d}_{i}.JPEG").write_bytes(
                    torchvision.io.encode_jpeg(image, quality=90).numpy().tobytes())
        args = argparse.Namespace(batch_size=batch, batches=min(4, per_class * classes // batch - 2), warmup=2,
                                  repeats=sizes.repeats + 1, threads=max(sizes.workers, 1))
        result = imagenet_loader.bench_size(root, imagenet_files(root, "train"), size, device, args)
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items() if k != "runs"}


# --- the paper presets' configurations -------------------------------------------------------------

def preset_configs(sizes: Sizes) -> list[dict[str, Any]]:
    """The paper presets' configurations, one per distinct (model, dataset, augmentation, JSD,
    mollification): of each sub-grid, the last point of every (model, augmentation, JSD) (the grids
    list datasets first and mollification last: the largest dataset, mollification on where the
    grid has it), with the presets that use it. Every augmentation path of the presets runs."""
    from study.spec import expand_grid, load_spec  # study.spec imports neither Ray, MLflow nor Optuna

    found: dict[tuple, dict[str, Any]] = {}
    for preset in PAPER_PRESETS:
        spec = load_spec(preset)
        for sub in spec.grid:
            last = {}
            for point in expand_grid((sub,)):
                values = {**spec.trial, **point}
                last[tuple(str(values.get(k)) for k in ("model", "augment", "jsd"))] = values
            for values in last.values():
                key = tuple(str(values.get(k)) for k in ("model", "dataset", "augment", "jsd", "mollify"))
                entry = found.setdefault(key, {"config": values, "presets": []})
                if preset not in entry["presets"]:
                    entry["presets"].append(preset)
    return list(found.values())


def trial_config(point: dict[str, Any], device: Any, sizes: Sizes):
    """The preset's configuration on synthetic data of its dataset's image size and classes."""
    from trainables.config import FIELD_TYPES, TrialConfig

    size, classes = DATASET_SHAPES[point.get("dataset", "synthetic")]
    keep = {k: v for k, v in point.items() if k in FIELD_TYPES and not k.startswith(("corruption", "data_root"))}
    values = {**keep, "dataset": "synthetic", "image_size": min(size, sizes.max_image_size), "train_size": sizes.preset_train,
              "num_classes": None, "device": str(device), "corruption_source": "none"}
    values["model"] = sizes.model(values.get("model", "smallcnn"))
    values["batch_size"] = min(values.get("batch_size", 128), sizes.batch)
    return TrialConfig.from_dict(values), classes


def short_trial(point: dict[str, Any], device: Any, sizes: Sizes) -> dict[str, Any]:
    """`preset_steps` training steps of the trial's own step functions; the hot path (every step
    after a short warm-up) runs under CUDA's sync debug mode, counting host syncs."""
    import torch

    from trainables.data import load_dataset
    from trainables.losses import create_loss
    from trainables.pipeline import autocast
    from trainables.batches import build_augmentation, make_batch, make_views
    from trainables.train import build_state, forward_loss

    cfg, classes = trial_config(point, device, sizes)
    train = load_dataset("synthetic", "", "train", image_size=cfg.image_size, device=device,
                         synthetic_size=cfg.train_size)
    train = replace(train, class_names=tuple(f"c{i}" for i in range(classes)),
                    labels=train.labels % classes)
    state = build_state(cfg, classes, sizes.preset_steps, device)
    (augment, mixer), loss_fn = build_augmentation(cfg), create_loss(cfg.loss)
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(len(train), device=device, generator=generator)
    per_epoch = len(train) // cfg.batch_size
    loss_sum = torch.zeros((), device=device)

    def step(i: int) -> None:
        nonlocal loss_sum
        index = order[(i % per_epoch) * cfg.batch_size:][: cfg.batch_size]
        x, y = (make_batch(cfg, train, index, generator, augment) if mixer is None
                else make_views(cfg, train, index, generator, augment, mixer))
        loss, _ = forward_loss(cfg, state.model, x, y, loss_fn)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        loss_sum = loss_sum + loss.detach()

    warm = min(3, sizes.preset_steps - 1)
    for i in range(warm):
        step(i)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loss_sum = torch.zeros((), device=device)
    timed = max(sizes.preset_steps - warm, 1)
    with count_syncs(device) as syncs:
        start = time.perf_counter()
        for i in range(warm, warm + timed):
            step(i)
    mean_loss = (loss_sum / timed).item()  # the one sync, after the hot path
    seconds = time.perf_counter() - start
    probe = torch.zeros((2, 3, cfg.image_size, cfg.image_size), device=device)
    with torch.no_grad(), autocast(device, cfg.precision):
        dtype = state.model(probe).dtype  # bf16 under the trial's autocast, as on CUDA it must be
    finite = bool(torch.isfinite(torch.tensor(mean_loss)))
    bf16 = dtype == torch.bfloat16
    ok = finite and syncs.count == 0 and (bf16 or device.type != "cuda")
    return {"presets": point["presets"], "model": cfg.model, "image_size": cfg.image_size, "classes": classes,
            "augment": cfg.augment, "jsd": cfg.jsd, "mollify": cfg.mollify, "batch": cfg.batch_size,
            "steps": timed, "loss": round(mean_loss, 4), "finite": finite, "output_dtype": str(dtype).replace("torch.", ""),
            "bf16": bf16, "host_syncs": syncs.count if device.type == "cuda" else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
            "img_s": round(timed * cfg.batch_size / seconds), "ok": ok}


class SyncCount:
    count: int = 0


@contextlib.contextmanager
def count_syncs(device: Any):
    """Counts CUDA host synchronisations in the block (torch's sync debug mode, as warnings); on
    the CPU there is nothing to count."""
    import torch

    counter = SyncCount()
    if device.type != "cuda":
        yield counter
        return
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counter
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counter.count = sum("synchroniz" in str(w.message).lower() for w in seen)


def presets_section(device: Any, sizes: Sizes) -> dict[str, Any]:
    rows = []
    for entry in preset_configs(sizes):
        point = {**entry["config"], "presets": entry["presets"]}
        try:
            rows.append(short_trial(point, device, sizes))
        except Exception as err:
            rows.append({"presets": entry["presets"], "config": {k: str(v) for k, v in entry["config"].items()},
                         "ok": False, "error": f"{type(err).__name__}: {err}"})
    failed = [r for r in rows if not r["ok"]]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(rows)} preset configurations failed their checks: "
                             + json.dumps(failed, default=str)[:1500])
    return {"rows": rows}


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- Markdown --------------------------------------------------------------------------------------

def table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    if not rows:
        return ["(none)"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    cell = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return lines + ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]


def markdown(data: dict[str, Any]) -> str:
    s = data["sections"]
    lines = [f"# GPU check ({data['mode']})", "",
             f"Started {data['started']}; device `{data['device']}`; command `{data['command']}`.",
             f"Ray, MLflow, Optuna imported: {data['forbidden_imported'] or 'none'}; import attempts refused: "
             f"{data['forbidden_attempts'] or 'none'}.", "",
             "| section | status | seconds | note |", "|---|---|---|---|"]
    for name, e in s.items():
        note = e.get("error") or e.get("reason") or ""
        lines.append(f"| {name} | {e['status']} | {e['seconds']} | {note[:200]} |")
    r = lambda name: s.get(name, {}).get("result") or {}
    if r("environment"):
        env = r("environment")
        lines += ["", "## Environment", "", f"torch {env['torch']}, torchvision {env['torchvision']}, CUDA {env['cuda']}, "
                  f"GPU {env['gpu']}, {env['cpus']} CPUs, Python {env['python']}, commit {env.get('commit', '?')}.",
                  "Modules present: " + ", ".join(f"{m} {'yes' if v else 'NO'}" for m, v in env["modules"].items())]
    if r("gpu_tests"):
        t = r("gpu_tests")
        lines += ["", "## GPU tests", "", f"Files: {', '.join(t['files'])}; exit code {t['exit_code']}; "
                  + ", ".join(f"{v} {k}" for k, v in t["counts"].items()) + f" of {t['total']}.", ""]
        lines += table(t["tests"], ["test", "outcome", "seconds", "message"])
    if r("throughput"):
        lines += ["", "## Training throughput (images/s, batch as run)", ""]
        lines += table(r("throughput"), ["model", "precision", "channels_last", "compile", "ours_img_s",
                                         "conventional_img_s", "speedup", "mollify_share"])
    if r("corruptions"):
        c = r("corruptions")
        lines += ["", "## Corruption grid", "", f"{c['cells']} cells over {c['images']:,} images: corrupting "
                  f"{c['corrupt_s']} s, resnet18 forward passes {c['resnet18_forward_s']} s, total {c['total_s']} s.",
                  f"Reference: {c['per_corruption']['reference']}.", ""]
        rows = [{"corruption": k, **v} for k, v in c["per_corruption"]["rows"].items()]
        lines += table(rows, ["corruption", "ours_img_s", "reference_img_s", "speedup"])
    if r("ipmix"):
        i = r("ipmix")
        lines += ["", "## IPMix and JSD", "", f"Batched ipmix {i['batched_img_s']} img/s; reference per image "
                  f"({i['reference_workers']} workers) {i['reference_img_s']} img/s; x{i['speedup']}.", ""]
        lines += table(i["training"], ["model", "without_jsd_img_s", "with_jsd_img_s", "ratio"])
    if r("presets"):
        lines += ["", "## Paper presets: short trials", ""]
        lines += table(r("presets")["rows"], ["presets", "model", "image_size", "classes", "augment", "jsd", "mollify",
                                             "batch", "steps", "loss", "finite", "bf16", "host_syncs",
                                             "peak_memory_gib", "img_s", "ok"])
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("GPU_CHECK_OUT", "gpu-check")))
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the check, measures nothing")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTION_NAMES, help="sections to leave out")
    parser.add_argument("--budget", type=float, help="seconds after which no further section starts "
                                                      "(default 450: the whole report within 8 minutes)")
    return parser.parse_args(argv)


SECTION_NAMES = ("environment", "gpu_tests", "presets", "throughput", "corruptions", "ipmix", "imagenet")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    forbidden_log = str(out / "forbidden-imports.log")
    out.mkdir(parents=True, exist_ok=True)
    Path(forbidden_log).write_text("")
    gpu_select.install_forbid(",".join(FORBIDDEN), forbidden_log)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("[gpu-check] no CUDA device: run on the GPU machine, or --device cpu --quick for the dry run",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    sizes = QUICK if args.quick else Sizes()
    report = Report(out, {"mode": "quick dry run" if args.quick else "full", "device": str(device),
                          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sizes": asdict(sizes),
                          "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                          "forbidden_log": forbidden_log})
    # The checks that prove the path first, the figures after: if time runs short, figures go.
    sections = {"environment": lambda: environment(device), "gpu_tests": lambda: gpu_tests(sizes, out, forbidden_log),
                "presets": lambda: presets_section(device, sizes), "throughput": lambda: throughput_rows(device, sizes),
                "corruptions": lambda: corruption_grid(device, sizes), "ipmix": lambda: ipmix_section(device, sizes),
                "imagenet": lambda: imagenet_section(device, sizes)}
    began = time.perf_counter()
    budget = args.budget if args.budget is not None else sizes.budget_s
    for name, fn in sections.items():
        if name not in args.skip:
            report.run(name, fn, late=time.perf_counter() - began > budget)
    report.meta["total_seconds"] = round(time.perf_counter() - began, 1)
    report.write()
    failed = [n for n, e in report.sections.items() if e["status"] == "failed"]
    print(f"[gpu-check] report: {out / 'gpu-check.md'} ({report.meta['total_seconds']} s); "
          f"{'failed: ' + ', '.join(failed) if failed else 'no section failed'}", flush=True)
    return 1 if failed or report.data()["forbidden_imported"] else 0


if __name__ == "__main__":
    sys.exit(main())

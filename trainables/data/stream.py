"""Batches streamed from JPEG files (a `FileSplit`) with NVIDIA DALI: datasets too large to hold decoded.

Every other dataset is one uint8 tensor on the training device; ImageNet (1.28M JPEGs, about 140 GB)
cannot be, so its batches are decoded as training reads them. Why DALI:

- On a GPU the JPEG decode runs there (nvJPEG, ``device="mixed"``) fused with the random-resized
  crop (only the crop window is decoded at full cost), and the resize and flip follow as GPU ops:
  the batch arrives on the device with no host round trip of decoded pixels, and the host CPUs,
  which a torch DataLoader would saturate with PIL decoding, stay free.
- Without a GPU the same graph runs on DALI's CPU backend (``device_id=None``): one function builds
  both, the device chosen from the `device` argument, so the CPU tests exercise the GPU's code.
- Memory is bounded by DALI's buffers (`PREFETCH` batches ahead), not by the dataset.

What an epoch contains is ours, not DALI's: a permutation of all N files drawn from (seed, epoch)
with a torch generator; global batch t is ``perm[t*B:(t+1)*B]``, and rank r of `world` takes rows
``[r*b:(r+1)*b]`` of it (``b = B // world``). The union of the ranks' batches is exactly the
one-worker batch, whatever the worker count; DALI gets each rank's file list in that order and
never shuffles (``random_shuffle=False``). Only its random crop and flip use its own generator,
seeded from (seed, epoch, rank), so an epoch is reproducible.

The pipelines end at uint8 (B, 3, S, S): the training loop normalises on the device after its own
batched augmentations, which need [0, 1] input.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from types import SimpleNamespace

import torch
from torch import Tensor

from trainables.data.base import FileSplit
from trainables.distributed import rank_order
from trainables.seeds import derive_seed

PREFETCH = 2  # batches DALI prepares ahead (its prefetch_queue_depth): the loader's memory bound
CROP_AREA = (0.08, 1.0)  # random-resized crop as torchvision's RandomResizedCrop and NVIDIA's ResNet-50
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 100  # then DALI falls back to the whole image, as torchvision does to a centre crop
EVAL_RESIZE_RATIO = 256 / 224  # shorter side before the centre crop: 256 for 224
DALI_PACKAGE = "nvidia-dali-cuda130"


def train_batches(files: FileSplit, *, image_size: int, batch_size: int, steps: int, seed: int, epoch: int,
                  rank: int = 0, world: int = 1, device: torch.device, threads: int | None = None,
                  ) -> Iterator[tuple[Tensor, Tensor]]:
    """`steps` training batches of epoch `epoch` for rank `rank` of `world`: uint8 (b, 3, S, S) random-
    resized crops (area 0.08-1, aspect 3/4-4/3, triangular-filtered resize to S = image_size),
    flipped with p=0.5, and int64 labels (b,), both on `device`; b = batch_size // world. Which
    files: see the module docstring. The pipeline is dropped when the last batch is taken."""
    _check_positive(image_size=image_size, batch_size=batch_size, world=world)
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by world {world}: each rank takes an equal share")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} not in 0..{world - 1}")
    if not 0 <= steps <= len(files) // batch_size:
        raise ValueError(f"steps must be in 0..{len(files) // batch_size} (full batches of {batch_size} "
                         f"among {len(files)} files), got {steps}")
    if steps == 0:
        return iter(())
    order = rank_order(len(files), batch_size=batch_size, steps=steps, seed=seed, epoch=epoch, rank=rank,
                       world=world)
    shard = files.subset(order)
    dali_seed = derive_seed(seed, "stream", epoch, rank) % 2**31
    pipe = _pipeline(shard, image_size, batch_size // world, device, threads, dali_seed, train=True, resize=0)
    return _batches(pipe, device, partial=False, limit=steps)


def eval_batches(files: FileSplit, *, image_size: int, batch_size: int, device: torch.device,
                 resize: int | None = None, limit: int | None = None, threads: int | None = None,
                 ) -> Iterator[tuple[Tensor, Tensor]]:
    """The first `limit` files (all when None) in file order, each resized so its shorter side is
    `resize` (default round(image_size * 256 / 224): 256 for 224; triangular filter) and centre-
    cropped to image_size: the standard ImageNet evaluation transform. Batches of `batch_size`, the
    last one short; every file exactly once. An image already image_size x image_size with resize ==
    image_size passes through unchanged (ImageNet-C's 224 px files, say: pass resize=image_size)."""
    resize = round(image_size * EVAL_RESIZE_RATIO) if resize is None else resize
    _check_positive(image_size=image_size, batch_size=batch_size, resize=resize)
    if resize < image_size:
        raise ValueError(f"resize {resize} is smaller than image_size {image_size}: the centre crop would not fit")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    count = len(files) if limit is None else min(limit, len(files))
    if count == 0:
        return iter(())
    shard = files.subset(torch.arange(count))
    pipe = _pipeline(shard, image_size, batch_size, device, threads, seed=0, train=False, resize=resize)
    return _batches(pipe, device, partial=True, limit=None)


def _pipeline(files: FileSplit, image_size: int, batch_size: int, device: torch.device, threads: int | None,
              seed: int, *, train: bool, resize: int):
    """One DALI graph for both devices: 'mixed' (nvJPEG) decoding and GPU ops on CUDA, CPU ops otherwise."""
    dali = _dali()
    fn, types = dali.fn, dali.types
    gpu = _on_gpu(device)
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=threads or len(os.sched_getaffinity(0)),
                         device_id=_device_index(device) if gpu else None, seed=seed, prefetch_queue_depth=PREFETCH)
    decoder_device = "mixed" if gpu else "cpu"
    with pipe:
        # pad_last_batch repeats the last file to fill a short final batch; the iterator's PARTIAL
        # policy then drops exactly the repeats (eval). Train reads whole batches only.
        jpegs, labels = fn.readers.file(files=list(files.paths), labels=files.labels.tolist(), random_shuffle=False,
                                        pad_last_batch=True, name="Reader")
        if train:
            images = fn.decoders.image_random_crop(jpegs, device=decoder_device, output_type=types.RGB,
                                                   random_area=list(CROP_AREA), random_aspect_ratio=list(CROP_ASPECT),
                                                   num_attempts=CROP_ATTEMPTS)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, interp_type=types.INTERP_TRIANGULAR)
            images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW",
                                              mirror=fn.random.coin_flip(probability=0.5))
        else:
            # fancy upsampling: nvJPEG then upsamples chroma as the CPU backend (libjpeg-turbo) and PIL
            # do, so an evaluation reads the same pixels on either device
            images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB, jpeg_fancy_upsampling=True)
            images = fn.resize(images, resize_shorter=resize, interp_type=types.INTERP_TRIANGULAR)
            images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW",
                                              crop=(image_size, image_size))
        pipe.set_outputs(images, labels.gpu() if gpu else labels)
    pipe.build()
    return pipe


def _batches(pipe, device: torch.device, *, partial: bool, limit: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    dali = _dali()
    policy = dali.LastBatchPolicy.PARTIAL if partial else dali.LastBatchPolicy.DROP
    # The pipeline's threads and buffers end with its last reference: this generator's frame, freed
    # when the last batch is taken or the generator is closed.
    iterator = dali.DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", last_batch_policy=policy)
    for step, out in enumerate(iterator):
        if limit is not None and step >= limit:
            return
        yield out[0]["images"], out[0]["labels"].view(-1).long()  # (B, 3, S, S) uint8, (B,) int64


def _on_gpu(device: torch.device) -> bool:
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"streaming runs on 'cpu' (DALI's CPU backend) or 'cuda' (nvJPEG), got {device}")
    return device.type == "cuda"


def _device_index(device: torch.device) -> int:
    device = torch.device(device)
    return torch.cuda.current_device() if device.index is None else device.index


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


@functools.cache
def _dali() -> SimpleNamespace:
    """The DALI names this module uses, imported on first use (importing trainables.data needs no DALI)."""
    try:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import Pipeline
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    except ImportError as err:
        raise ImportError(f"streaming batches needs NVIDIA DALI: pip install {DALI_PACKAGE} (Linux x86_64 or "
                          f"aarch64; see pyproject.toml) [{err}]") from err
    return SimpleNamespace(fn=fn, types=types, Pipeline=Pipeline, DALIGenericIterator=DALIGenericIterator,
                           LastBatchPolicy=LastBatchPolicy)

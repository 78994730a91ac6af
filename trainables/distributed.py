"""Where a process sits among a trial's data-parallel workers (METHOD.md's trial, spread over W
processes by Ray Train): its rank, and the few collective operations the loop needs.

One trial with W workers computes what one process with the same global batch computes: every
worker draws the same global batch order (seeded by the trial seed and the epoch), takes its
contiguous `1/W` of each global batch, and averages gradients with the others (DDP), with batch
norm statistics over the global batch (SyncBatchNorm). What differs per worker is the random
stream of its augmentation and mollification draws: worker 0 draws the single-process stream,
worker r one derived from the trial seed and r. A single process is `Workers()`: rank 0 of 1,
and every collective is then the identity, so single-process trials run exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from trainables.seeds import derive_seed, generator


@dataclass(frozen=True)
class Workers:
    """This process's rank among `world` workers of one trial."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")

    @classmethod
    def current(cls) -> "Workers":
        """The torch.distributed process group's view (Ray Train sets it up), else one process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        """Rank 0: the worker that logs, checkpoints and keeps the model."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """The seed of this worker's draws: the trial seed itself on rank 0 (a one-worker trial draws
        what a single process draws), a stream of its own on every other rank."""
        return seed if self.rank == 0 else derive_seed(seed, "worker", self.rank)

    def part(self, batch_size: int) -> int:
        """Images per worker in one global batch of `batch_size`."""
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {self.world} workers")
        return batch_size // self.world

    def shard(self, rows: Tensor) -> Tensor:
        """This worker's contiguous part of a global batch (its first dimension)."""
        part = self.part(rows.shape[0])
        return rows[self.rank * part:(self.rank + 1) * part]

    def sum(self, value: Tensor) -> Tensor:
        """The sum over workers of a tensor on this worker's device (in place on several)."""
        if self.world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def gather(self, value: Tensor) -> list[Tensor]:
        """Every worker's `value` (a CPU tensor, e.g. a generator state), by rank; [] on one process,
        where there is nothing to gather. A collective: every worker calls it."""
        if self.world == 1:
            return []
        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def share(self, value: object) -> object:
        """Rank 0's `value` on every worker (a decision all must take alike). A collective."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# --- batch norm over the global batch --------------------------------------------------------------

class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all workers' parts):
    what `nn.SyncBatchNorm` computes, on any device and backend. torch's own refuses CPU tensors
    (in its forward and in DDP's constructor), so a CPU trial over gloo could not use it.

    Two passes (the mean, then the squared deviations from it), each an all-reduce of C sums, for
    the same float32 accuracy as one process's batch norm; the all-reduces carry gradients
    (`torch.distributed.nn`), so the backward pass sums each worker's part of the statistics'
    gradient, as SyncBatchNorm's does. Outside training or on one process: BatchNorm2d itself."""

    def forward(self, x: Tensor) -> Tensor:  # x: (b, C, H, W), this worker's part
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        xf = x.float()
        count = x.numel() // x.shape[1] * dist.get_world_size()  # global B*H*W: every part is b images
        mean = dist_fn.all_reduce(xf.sum(dims)) / count  # (C,)
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce(centred.square().sum(dims)) / count  # (C,), biased, as BN normalises with
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), count)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: int) -> None:
        """As BatchNorm2d: an exponential (or, momentum None, cumulative) average, of the unbiased variance."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_((var * count / (count - 1)).to(self.running_var.dtype), factor)


def global_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with each BatchNorm2d made a GlobalBatchNorm (`swap_batch_norm`)."""
    return swap_batch_norm(module, GlobalBatchNorm)


def swap_batch_norm(module: nn.Module, kind: type[nn.BatchNorm2d]) -> nn.Module:
    """`module` with each 2-d batch norm (BatchNorm2d, GlobalBatchNorm, torch's SyncBatchNorm) made
    a `kind` holding the same parameters and buffers, under the same names (a checkpoint loads into
    either). Back to nn.BatchNorm2d, a data-parallel trial's network is the one a single process
    trains: it loads and evaluates anywhere, without this module or a process group."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        if type(module) is kind:
            return module
        swapped = kind(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        swapped.load_state_dict(module.state_dict())
        swapped.weight, swapped.bias = module.weight, module.bias  # the very parameters an optimizer may hold
        return swapped.to(module.weight.device if module.affine else module.running_mean.device).train(module.training)
    for name, child in module.named_children():
        setattr(module, name, swap_batch_norm(child, kind))
    return module


def rank_order(n: int, *, batch_size: int, steps: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> Tensor:
    """The indices of n images that rank `rank` of `world` reads in epoch `epoch`, in order, on the
    CPU: (steps * b,) int64, b = batch_size // world. A permutation drawn from (seed, epoch) alone;
    global batch t is its t-th slice of `batch_size`, and each rank takes its contiguous b of it,
    so the ranks together read exactly the one-worker batches. Splits in memory and streamed
    ones (trainables.data.stream) read in this order."""
    perm = torch.randperm(n, generator=generator(seed, "epoch order", epoch))
    b = Workers(rank, world).part(batch_size)
    return perm[:steps * batch_size].view(steps, batch_size)[:, rank * b:(rank + 1) * b].reshape(-1)

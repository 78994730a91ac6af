"""The checkpoint format of a trial: everything a restarted trial needs to continue exactly where it
stopped, written atomically, and refused when it belongs to another configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_FILE = "checkpoint.pt"
# Settings that change where or how fast a trial runs, not what it computes: a checkpoint made with
# other values of these continues as the same trial.
RESUMABLE_CHANGES = ("device", "eval_batch_size", "data_root", "corruption_path", "compile")


class CheckpointError(ValueError):
    """A checkpoint that cannot be continued: unreadable, or made with another configuration."""


@dataclass
class TrainState:
    """Everything a restarted trial needs to continue exactly where it stopped."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # draws batch order, augmentation and mollification
    config: dict = field(default_factory=dict)  # the trial's config: a checkpoint continues only it
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # Each data-parallel worker's generator state, by rank (rank 0's is `generator`'s): a worker
    # group restarted from the checkpoint continues every worker's own draws. Empty: one process.
    worker_generators: list[torch.Tensor] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        """The device the model trains on."""
        return next(self.model.parameters()).device

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (CHECKPOINT_FILE + ".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "config": self.config,
                "epoch": self.epoch,
                "history": self.history,
                "worker_generators": self.worker_generators,
            },
            tmp,
        )
        os.replace(tmp, folder / CHECKPOINT_FILE)  # atomic: a crash never leaves half a file
        return folder

    def load(self, folder: Path, rank: int = 0) -> None:
        """Continue from the checkpoint in `folder`; worker `rank` continues its own draws (a worker
        the checkpoint has none for keeps its fresh stream: the group grew)."""
        state = read_checkpoint(folder, self.config)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.worker_generators = state.get("worker_generators", [])
        if rank == 0:
            self.generator.set_state(state["generator"])
        elif rank < len(self.worker_generators):
            self.generator.set_state(self.worker_generators[rank])
        self.epoch, self.history = state["epoch"], state["history"]


def has_checkpoint(folder: Path | None) -> bool:
    return folder is not None and (Path(folder) / CHECKPOINT_FILE).exists()


def read_checkpoint(folder: Path, config: dict) -> dict:
    """The checkpoint in `folder`, checked to be readable and made with `config` (but for
    RESUMABLE_CHANGES): continuing another configuration's weights, optimizer and schedule under
    this one's name would record a trial that never ran."""
    path = Path(folder) / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["model"], state["epoch"]
    except Exception as err:  # torch raises several kinds on a truncated or foreign file
        raise CheckpointError(f"the checkpoint {path} is unreadable ({type(err).__name__}); delete it to start "
                              "the trial over, or point --checkpoint-dir elsewhere") from None
    made = state.get("config") or {}  # checkpoints from before configs were kept: not checked
    differ = sorted(k for k in made.keys() & config.keys() if made[k] != config[k] and k not in RESUMABLE_CHANGES)
    if differ:
        changes = ", ".join(f"{k} {made[k]!r} -> {config[k]!r}" for k in differ)
        raise CheckpointError(f"the checkpoint {path} belongs to a trial with another configuration ({changes}); "
                              "rerun with its settings to continue it, or use another --checkpoint-dir")
    return state

"""The interface between the shared training loop and a model family.

The loop (training/loop.py) owns epochs, checkpoints, logging, the NaN guard,
the scheduler, early stopping, autocast and DDP. A runner owns what differs
between model families: the model, the batches, the loss of one batch, the
validation loss and the test rendering. This is Skeltorch's "Runner" role.
"""

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from ..data.stateful_loader import StatefulLoader
from ..data.store import UtteranceStore
from ..experiment.folder import Experiment


@dataclass
class RunContext:
    """Everything a runner may need about where and how it runs."""

    experiment: Experiment
    config: dict
    data_path: Path
    device: torch.device
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    log: logging.Logger = logging.getLogger("samplernn_pase")
    #: The experiment folder was unpacked from a release: other experiments are not at hand.
    from_release: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Runner(ABC):
    """Base class of the model-family runners. Subclasses implement the abstract hooks."""

    #: DDP must look for parameters unused in a step (e.g. one MelNet tier trained at a time).
    find_unused_parameters = False

    def __init__(self, context: RunContext):
        self.context = context
        self.config = context.config
        self.device = context.device
        self.log = context.log
        self.model: nn.Module = self.build_model().to(self.device)

    # --- the corpus, opened on first use ----------------------------------------

    @cached_property
    def index(self) -> dict:
        """data.json of the experiment."""
        return self.context.experiment.data_index()

    @cached_property
    def store(self):
        """Normalized features and audio of the experiment's utterances."""
        return UtteranceStore(self.index, self.context.experiment.normalization(),
                              self.context.data_path, cache_size=self.store_cache_size)

    #: Utterances the store keeps in memory.
    store_cache_size = 64

    def utterance_ids(self, split: str) -> list[str]:
        """Utterances of the modeling speakers in one split (what training sees)."""
        return self.store.ids(split=split, speaker_set="modeling")

    def stateful_loader(self, source, chunk_frames: int, split: str, epoch: int,
                        shuffle: bool) -> StatefulLoader:
        """Truncated-BPTT batches of a split, this rank's shard, seeded by the experiment."""
        return StatefulLoader(source, self.utterance_ids(split), self.config["training"]["batch_size"],
                              chunk_frames, seed=self.config["seed"], epoch=epoch,
                              rank=self.context.rank, world_size=self.context.world_size,
                              shuffle=shuffle)

    # --- to implement ----------------------------------------------------------

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model family's nn.Module (moved to the device by the base class)."""

    @abstractmethod
    def train_batches(self, epoch: int, position: dict | None):
        """An iterable of batches for one epoch, with `state_dict()` giving its position.

        `position` is a previous `state_dict()` of the same epoch's loader when
        resuming mid-epoch, so that training continues at the next batch.
        """

    @abstractmethod
    def train_step(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        """Loss of one batch (to back-propagate) and extra scalars to log.

        `model` is `self.model`, or its DistributedDataParallel wrapper.
        """

    @abstractmethod
    def validation_loss(self) -> tuple[float, float]:
        """(sum of losses, count) over this rank's share of the validation split."""

    @abstractmethod
    def test(self, epoch: int, out_dir: Path, writer=None, utterance_ids=None,
             speaker_set: str = "modeling") -> dict:
        """Render test utterances into `out_dir` and return the metrics written to metrics.json."""

    # --- optional hooks ----------------------------------------------------------

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def state_dict(self) -> dict:
        """Training state beyond the model weights (e.g. carried recurrent states)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def on_skipped_step(self) -> None:
        """Called when the NaN guard skips a step: drop state that may be poisoned."""

    @property
    def loss_name(self) -> str:
        return "loss"

"""The interface between the shared training loop and a model family.

The loop (training/loop.py) owns epochs, checkpoints, logging, the NaN guard,
the scheduler, early stopping, autocast and DDP. A runner owns what differs
between model families: the model, the batches, one training step (its losses,
each optimizer stepped through the loop's `optimize`), the validation loss and the test rendering (a plan of items that the ranks
render in shares, written by rank 0). This is Skeltorch's "Runner" role.
"""

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from ..data.speaker_seeds import SEEDS_FILE, compute_speaker_seeds
from ..data.stateful_loader import StatefulLoader
from ..data.store import UtteranceStore
from ..errors import UserError
from ..experiment.folder import Experiment
from ..experiment.weights import load_pase
from ..training.optim import Optimize, build_optimizer
from ..training.distributed import Distributed
from ..training.rng import side_stream

TEST_STREAM = 2   # side_stream key of test rendering


def pase_seed_files(model_config: dict, data_index: dict, normalization: dict, experiments_path: Path,
                    data_path: Path, log) -> dict:
    """`init` of a family with `conds_speaker_type: "pase"`: {speaker_seeds.npz: its arrays}, the
    seeds made by the encoder of the PASE experiment the config names; {} for a speaker table."""
    if model_config["conds_speaker_type"] != "pase":
        return {}
    pase = load_pase(experiments_path, model_config["pase_experiment"], model_config.get("pase_epoch"))
    return {SEEDS_FILE: compute_speaker_seeds(pase, model_config, data_index, normalization, data_path, log)}


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
    """Base class of the model-family runners. Subclasses implement the abstract hooks;
    every other hook the loop or the CLI calls is declared below with a default."""

    #: DDP must look for parameters unused in a step (e.g. one MelNet tier trained at a time).
    find_unused_parameters = False
    #: The name of the training loss in logs, checkpoints/index.json and the report.
    loss_name = "loss"
    #: The name of what `validation_loss` measures, where it is not the training loss (None: it is).
    validation_loss_name: str | None = None

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

    @cached_property
    def evaluation(self):
        """The independent judges of `test` (metrics/evaluation.py), built on first use."""
        from ..metrics.evaluation import Evaluation
        return Evaluation(self.index, self.store, self.config["data"])

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

    @staticmethod
    def positioned(batches, position: dict | None, empty: str | None = None):
        """`train_batches`' loader at a resumed `position` (None: from the start); `empty`:
        the one-line error when the loader has no batch at all."""
        if empty is not None and len(batches) == 0:
            raise UserError(empty)
        if position is not None:
            batches.load_state_dict(position)
        return batches

    def voiced_speakers(self) -> list[str]:
        """Ids of the speakers the model renders. A learned speaker table has rows for every
        speaker, but training only ever updates the modeling speakers' rows: audio from another
        row would be noise passed off as that speaker. PASE seeds (`speaker_vectors`) voice any."""
        seeded = getattr(self, "speaker_vectors", None) is not None
        return [s["id"] for s in self.index["speakers"] if seeded or s["set"] == "modeling"]

    def refuse_untrained_speakers(self, utterance_ids) -> None:
        """One line naming the speakers of `utterance_ids` that are not `voiced_speakers`."""
        speaker_of = {u["id"]: u["speaker"] for u in self.index["utterances"]}
        untrained = sorted({speaker_of[i] for i in utterance_ids} - set(self.voiced_speakers()))
        if untrained:
            raise UserError(
                f"speaker {', '.join(untrained)}: not a modeling speaker, so its row of the speaker "
                "embedding table was never trained (model.conds_speaker_type \"embedding\"); "
                "voice unseen speakers with conds_speaker_type \"pase\"")

    # --- to implement ----------------------------------------------------------

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model family's nn.Module (moved to the device by the base class)."""

    @abstractmethod
    def train_batches(self, epoch: int, position: dict | None):
        """The batches of one epoch: iterable, `len()` of them in the epoch, `.position`
        the number already given, and `state_dict()` / `load_state_dict()` of that position.

        `position` is a previous `state_dict()` of the same epoch's loader when
        resuming mid-epoch, so that training continues at the next batch.
        """

    @abstractmethod
    def training_step(self, model, batch, optimize: "Optimize") -> dict[str, torch.Tensor]:
        """One batch: compute the losses, call `optimize(name, loss)` for each optimizer that
        steps on this batch, in order (GAN families: critic / discriminator step, then the
        generator step, written top to bottom here, ~30 lines as in hifi-gan's train.py), and
        return the scalars to log as (detached) tensors. The key `self.loss_name` is the run's
        training loss (the first optimizer's), absent when that optimizer did not step.

        `model` is `self.model`, or under torchrun its DistributedModel
        (training/distributed.py): call it, or its named loss methods, on it, so that
        DistributedDataParallel sees the computation. `optimize` (training/optim.py)
        back-propagates into the optimizer's gradients and, on the last batch of a
        `training.accumulate_batches` group, clips, applies the NaN guard and steps; it
        returns True for a batch that only accumulated, else whether the step was taken.
        """

    @abstractmethod
    def validation_loss(self) -> tuple[float, float]:
        """(sum of losses, count) over this rank's share of the validation split."""

    @abstractmethod
    def test_plan(self, utterance_ids: list[str] | None, speaker_set: str) -> list:
        """The work of one test as a list of items (utterance ids, ...) that ranks share out.

        `utterance_ids` None: the experiment's fixed test list for `speaker_set`.
        """

    @abstractmethod
    def render(self, epoch: int, items: list, speaker_set: str) -> list:
        """Render some items of the plan: one result per item (or None), plain data only
        (arrays, numbers, strings), since other ranks send theirs to rank 0."""

    @abstractmethod
    def write_test(self, epoch: int, out_dir: Path, rendered: list, writer, speaker_set: str) -> dict:
        """Write every rank's results (plan order) into `out_dir`; returns metrics.json's content."""

    # --- test rendering: planned, rendered in shares, written once -----------------

    def test(self, epoch: int, out_dir: Path, writer=None, utterance_ids=None,
             speaker_set: str = "modeling", dist: Distributed | None = None) -> dict | None:
        """Render the test (`render_test`) and write it into `out_dir` (`write_test`: files,
        the independent judges, TensorBoard); returns the metrics written to metrics.json.
        Under torchrun (`dist`) rank 0 writes every rank's share (the other ranks return None).
        """
        dist = dist or Distributed()
        rendered = self.render_test(epoch, utterance_ids, speaker_set, dist)
        metrics = None
        if rendered is not None:
            metrics = self.write_test(epoch, Path(out_dir), rendered, writer, speaker_set)
        dist.slow_barrier()   # the other ranks wait for rank 0's writing here, not in training
        return metrics

    def render_test(self, epoch: int, utterance_ids=None, speaker_set: str = "modeling",
                    dist: Distributed | None = None) -> list | None:
        """What a test renders, in plan order (one result per item that rendered), written
        nowhere: `test` writes it, the Python API (api.py) returns its audio.

        Under torchrun every rank renders its share of the plan and rank 0 gets them all (the
        other ranks get None). The waits use the long-timeout group (training/distributed.py):
        however long the test, no collective times out. Rendering runs on its own RNG stream,
        seeded by `rendering_seed` and the epoch: the training stream is left as it was.
        """
        dist = dist or Distributed()
        plan = self.test_plan(utterance_ids, speaker_set)
        share = list(range(dist.rank, len(plan), dist.world_size))
        self.model.eval()
        with side_stream(self.rendering_seed, epoch, TEST_STREAM), torch.no_grad():
            rendered = self.render(epoch, [plan[i] for i in share], speaker_set)
        shares = dist.gather_to_main((share, rendered))
        if shares is None:
            return None
        ordered = [None] * len(plan)
        for indices, results in shares:
            for i, result in zip(indices, results):
                ordered[i] = result
        return [r for r in ordered if r is not None]

    #: `synthesize --seed` / the API's `seed=`: the seed of rendering's random draws instead of
    #: the experiment's (None: config.json `seed`, what `test` uses).
    render_seed: int | None = None

    @property
    def rendering_seed(self) -> int:
        """The seed of test rendering's random draws (with the epoch): `render_seed` or the
        experiment's seed."""
        return self.config["seed"] if self.render_seed is None else self.render_seed

    # --- optional hooks ----------------------------------------------------------

    @staticmethod
    def prepare_experiment(config: dict, data_index: dict, normalization: dict,
                           experiments_path: Path, data_path: Path, log: logging.Logger) -> dict:
        """`init`: files the family computes once from the corpus, as {file name: {name: array}}
        written into the experiment (e.g. PASE speaker seeds, mels.npz); arrays under
        "normalization.npz" are added to that file. `experiments_path` holds the experiments a
        config may name (a PASE or VQ-VAE experiment). None by default."""
        return {}

    def select_tier(self, tier: int) -> None:
        """`train --tier K`: train only tier K (families with tiers: MelNet)."""
        raise UserError(f"--tier {tier}: only MelNet experiments have tiers")

    def speaker_tables(self) -> dict[str, tuple[int, int]]:
        """The model's tables indexed by speaker, as {state_dict key: (first row, rows per
        speaker)}: data.json's speaker `index` s owns rows first + s * per up to
        first + (s + 1) * per. `init --init-from` maps these rows by speaker id
        (experiment/weights.py `transferred_weights`); every other tensor is copied as it is.
        A family with a table indexed by speaker declares it here. None by default."""
        return {}

    def data_speaker_tables(self) -> frozenset[str]:
        """The speaker tables of `speaker_tables` that the family fills from its own data when it
        builds a model (the acoustic model's per-symbol means): there `init --init-from` gives a
        speaker the source never trained its rows from this experiment's data, not the mean of
        the source's. None by default."""
        return frozenset()

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def optimizers(self, training: dict) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by name, in the order they step on each batch; the first
        one's loss is the run's training loss. One Adam-like optimizer by default."""
        return {"model": build_optimizer(self.trainable_parameters(), training)}

    def state_dict(self) -> dict:
        """Training state beyond the model weights (e.g. carried recurrent states)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def on_skipped_step(self) -> None:
        """Called when the NaN guard skips a step: drop state that may be poisoned."""

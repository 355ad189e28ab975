"""The one training loop shared by every model family.

Read top to bottom it is the whole of training: resume, epochs of
truncated-BPTT batches, the NaN guard, gradient clipping, checkpoints
(every epoch and every `checkpoint_period` iterations), validation, the
learning-rate scheduler, early stopping and the test rendering. A model
family only provides a Runner (runners/base.py).
"""

import math
import random
import signal
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..errors import UserError
from ..experiment.folder import Experiment, atomic_torch_save, atomic_write_json
from ..runners.base import Runner
from .distributed import Distributed
from .prefetch import Prefetcher
from .progress import progress


class TrainingError(UserError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


class Interrupted:
    """Turns SIGINT/SIGTERM into a flag the loop checks after every step."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def build_optimizer(parameters, training: dict) -> torch.optim.Optimizer:
    kind, lr, decay = training["optimizer"], training["learning_rate"], training["weight_decay"]
    if kind == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if kind == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    return torch.optim.SGD(parameters, lr=lr, weight_decay=decay, momentum=0.9)


def build_scheduler(optimizer, training: dict):
    settings = training["scheduler"]
    if settings["type"] == "none":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings["factor"], patience=settings["patience"],
        min_lr=settings["min_lr"])


class Trainer:
    """Holds the state of one training run; `run()` is the loop."""

    def __init__(self, experiment: Experiment, runner: Runner, dist: Distributed,
                 max_epochs: int | None = None, log_period: int | None = None):
        self.experiment = experiment
        self.runner = runner
        self.dist = dist
        self.config = runner.config
        self.training = self.config["training"]
        self.log = runner.log
        self.device = runner.device
        self.max_epochs = max_epochs or self.training["max_epochs"]
        self.log_period = log_period or self.training["log_period"]
        self.optimizer = build_optimizer(runner.trainable_parameters(), self.training)
        self.scheduler = build_scheduler(self.optimizer, self.training)
        self.model = runner.model
        if dist.enabled:
            self.model = DistributedDataParallel(
                runner.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=runner.find_unused_parameters)
        self.writer = None
        self.interrupted_by = None  # the signal that stopped `run()` early, e.g. "SIGINT"
        # Counters saved in every checkpoint.
        self.epoch = 1              # the epoch in progress (or next to start)
        self.iteration = 0          # optimizer steps taken, all epochs together
        self.loader_position = None  # position inside `epoch` when resuming mid-epoch
        self.epoch_loss = [0.0, 0]  # running sum and count of this epoch's training losses
        self.best_validation = math.inf
        self.bad_epochs = 0
        self.nan_streak = 0
        self.history: list[dict] = []

    # --- checkpoints -----------------------------------------------------------

    def state(self, epoch_complete: bool, loader_position=None) -> dict:
        return {
            "format": 1,
            "package_version": __version__,
            "model_type": self.config["model"]["type"],
            "config": self.config,
            "model": self.runner.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "runner": self.runner.state_dict(),
            "rng": rng_state(),
            "loop": {
                "epoch": self.epoch, "epoch_complete": epoch_complete, "iteration": self.iteration,
                "loader": loader_position, "epoch_loss": list(self.epoch_loss),
                "best_validation": self.best_validation, "bad_epochs": self.bad_epochs,
                "nan_streak": self.nan_streak, "history": self.history,
            },
        }

    def resume(self) -> bool:
        latest = self.experiment.latest_checkpoint(map_location=self.device)
        if latest is None:
            return False
        path, state = latest
        self.runner.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.runner.load_state_dict(state["runner"])
        set_rng_state(state["rng"])
        loop = state["loop"]
        self.iteration = loop["iteration"]
        self.best_validation, self.bad_epochs = loop["best_validation"], loop["bad_epochs"]
        self.nan_streak, self.history = loop["nan_streak"], loop["history"]
        if loop["epoch_complete"]:
            self.epoch, self.loader_position, self.epoch_loss = loop["epoch"] + 1, None, [0.0, 0]
        else:
            self.epoch, self.loader_position = loop["epoch"], loop["loader"]
            self.epoch_loss = list(loop["epoch_loss"])
        self.log.info("resumed from %s (epoch %d, iteration %d)", path, self.epoch, self.iteration)
        return True

    def save_partial(self, loader_position) -> None:
        if self.dist.is_main:
            atomic_torch_save(self.experiment.partial_checkpoint_path,
                              self.state(epoch_complete=False, loader_position=loader_position))
            self.log.info("checkpoint: %s (iteration %d)", self.experiment.partial_checkpoint_path,
                          self.iteration)

    def save_epoch(self, validation_loss: float) -> None:
        if not self.dist.is_main:
            return
        experiment = self.experiment
        atomic_torch_save(experiment.checkpoint_path(self.epoch), self.state(epoch_complete=True))
        index = experiment.checkpoint_index()
        index["epochs"][str(self.epoch)] = {"validation_loss": validation_loss,
                                            "iteration": self.iteration}
        best = min(index["epochs"], key=lambda e: index["epochs"][e]["validation_loss"])
        index["best_epoch"] = int(best)
        # Keep the last N epoch checkpoints plus the best one.
        keep = set(experiment.checkpoint_epochs()[-self.training["keep_checkpoints"]:]) | {int(best)}
        for epoch in experiment.checkpoint_epochs():
            if epoch not in keep:
                experiment.checkpoint_path(epoch).unlink(missing_ok=True)
                index["epochs"].pop(str(epoch), None)
        atomic_write_json(experiment.checkpoint_index_path, index)
        # The epoch checkpoint now holds at least as much training as the partial one.
        experiment.partial_checkpoint_path.unlink(missing_ok=True)
        self.log.info("checkpoint: %s", experiment.checkpoint_path(self.epoch))

    # --- one step ----------------------------------------------------------------

    def step(self, batch) -> float | None:
        """One optimizer step; returns the loss, or None when the NaN guard skipped it."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        use_bf16 = self.training["bf16"] and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, scalars = self.runner.train_step(self.model, batch)
        loss.backward()
        clip = self.training["gradient_clip"]
        parameters = self.runner.trainable_parameters()
        if clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        finite = bool(torch.isfinite(loss).item() and torch.isfinite(grad_norm).item())
        if self.dist.enabled:  # every rank must take the same decision
            finite = not self.dist.any_true(not finite, self.device)
        if not finite:
            self.nan_streak += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.runner.on_skipped_step()
            self.log.warning("iteration %d: non-finite loss or gradient, step skipped (%d in a row)",
                             self.iteration + 1, self.nan_streak)
            if self.nan_streak >= self.training["nan_tolerance"]:
                raise TrainingError(
                    f"training stopped: {self.nan_streak} non-finite losses in a row "
                    f"(lower training.learning_rate or training.gradient_clip)")
            return None
        self.nan_streak = 0
        self.optimizer.step()
        self.iteration += 1
        value = loss.item()
        if self.writer is not None and self.iteration % self.log_period == 0:
            self.writer.add_scalar(f"train/{self.runner.loss_name}", value, self.iteration)
            self.writer.add_scalar("train/grad_norm", grad_norm.item(), self.iteration)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.iteration)
            for name, scalar in scalars.items():
                self.writer.add_scalar(f"train/{name}", scalar, self.iteration)
        if self.iteration % self.log_period == 0:
            self.log.info("epoch %d iteration %d %s %.9g", self.epoch, self.iteration,
                          self.runner.loss_name, value)
        return value

    # --- the loop -----------------------------------------------------------------

    def run(self, test_callback=None) -> None:
        if self.dist.is_main:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(str(self.experiment.tensorboard_dir))
        checkpoint_period = self.training["checkpoint_period"]
        try:
            with Interrupted() as interrupted:
                while self.epoch <= self.max_epochs:
                    batches = self.runner.train_batches(self.epoch, self.loader_position)
                    total = len(batches) if hasattr(batches, "__len__") else None
                    done = getattr(batches, "position", 0)    # batches already trained (resume)
                    if self.runner.context.num_workers > 0:
                        batches = Prefetcher(batches, self.runner.context.num_workers)
                    self.loader_position = None
                    epoch_started = time.time()
                    bar = progress(batches, desc=f"epoch {self.epoch}", enabled=self.dist.is_main,
                                   log=self.log, total=total, initial=done)
                    for batch in bar:
                        loss = self.step(batch)
                        if loss is not None:
                            self.epoch_loss[0] += loss
                            self.epoch_loss[1] += 1
                            bar.set_postfix({self.runner.loss_name: f"{loss:.4f}"})
                        stop = self.dist.any_true(interrupted.signal is not None, self.device)
                        if stop or (checkpoint_period and self.iteration % checkpoint_period == 0
                                    and loss is not None):
                            self.save_partial(batches.state_dict())
                        if stop:
                            # Another rank's signal stops this one too: report it as SIGTERM.
                            self.interrupted_by = interrupted.signal or "SIGTERM"
                            self.log.warning("%s received: checkpoint saved at iteration %d; run the "
                                             "same command to resume", interrupted.signal or "signal",
                                             self.iteration)
                            return
                    bar.close()
                    if self.end_epoch(test_callback, time.time() - epoch_started):
                        break
                    self.epoch += 1
                    self.epoch_loss = [0.0, 0]
        finally:
            if self.writer is not None:
                self.writer.close()

    def end_epoch(self, test_callback, train_seconds: float = 0.0) -> bool:
        """Validate, step the scheduler, checkpoint, test; True when early stopping.

        `train_seconds`: time spent on this epoch's training steps (in this process)."""
        started = time.time()
        self.model.eval()
        loss_sum, count = self.runner.validation_loss()
        loss_sum, count = self.dist.all_reduce_sum([loss_sum, count], self.device)
        validation = loss_sum / max(count, 1)
        train_loss = self.epoch_loss[0] / max(self.epoch_loss[1], 1)
        if self.scheduler is not None:
            self.scheduler.step(validation)
        improved = validation < self.best_validation
        if improved:
            self.best_validation, self.bad_epochs = validation, 0
        else:
            self.bad_epochs += 1
        self.history.append({"epoch": self.epoch, "iteration": self.iteration,
                             "train_loss": train_loss, "validation_loss": validation})
        # On the terminal with or without --verbose (see cli.setup_logging: `summary`).
        self.log.info("epoch %d done: train %s %.4f, validation %s %.4f%s; %d steps in %.1f s, "
                      "validation %.1f s; iteration %d", self.epoch, self.runner.loss_name,
                      train_loss, self.runner.loss_name, validation, " (best)" if improved else "",
                      self.epoch_loss[1], train_seconds, time.time() - started, self.iteration,
                      extra={"summary": True})
        if self.writer is not None:
            self.writer.add_scalar(f"epoch/train_{self.runner.loss_name}", train_loss, self.epoch)
            self.writer.add_scalar(f"epoch/validation_{self.runner.loss_name}", validation, self.epoch)
        self.save_epoch(validation)
        period = self.config["test"]["period"]
        if test_callback is not None and period and self.epoch % period == 0:
            if self.dist.is_main:
                test_callback(self.epoch, self.writer)
            self.dist.barrier()
        patience = self.training["early_stopping_patience"]
        if patience is not None and self.bad_epochs >= patience:
            self.log.warning("early stopping: validation loss has not improved for %d epochs",
                             self.bad_epochs)
            return True
        return False


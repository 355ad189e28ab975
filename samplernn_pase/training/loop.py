"""The one training loop shared by every model family.

Read top to bottom it is the whole of training: resume, epochs of
truncated-BPTT batches, the NaN guard, gradient clipping, checkpoints
(every epoch and every `checkpoint_period` iterations), validation, the
learning-rate scheduler, early stopping and the test rendering. A model
family only provides a Runner (runners/base.py, duck-typed here: training sits
below runners in the layer order); its `training_step` computes the losses of
a batch and steps each optimizer through `Trainer.optimize`.
"""

import io
import math
import signal
import time
from contextlib import nullcontext

import torch

from .. import __version__
from ..errors import UserError
from ..experiment.folder import Experiment, atomic_torch_save, atomic_write_json
from ..experiment.weights import load_initial_weights
from .distributed import Distributed, DistributedModel
from .optim import build_scheduler, step_scheduler
from .precision import autocast, gradient_scaler, resolve_precision
from .prefetch import Prefetcher
from .progress import progress
from .rng import rng_state, set_rng_state, side_stream


VALIDATION_STREAM = 1   # side_stream key: validation draws (e.g. PASE's negatives) apart from training


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


def saved_rank_states(state: dict) -> list[dict]:
    """Per-rank entries of a checkpoint; a format-1 checkpoint held rank 0's alone."""
    if "ranks" in state:
        return state["ranks"]
    loop = state["loop"]
    return [{"loader": loop.get("loader"), "runner": state["runner"], "rng": state["rng"],
             "epoch_loss": loop.get("epoch_loss", [0.0, 0])}]


def saved_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def move_tensors(value, device):
    """`value` with every tensor in its dicts and lists moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: move_tensors(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_tensors(v, device) for v in value)
    return value


class Trainer:
    """Holds the state of one training run; `run()` is the loop."""

    def __init__(self, experiment: Experiment, runner, dist: Distributed,
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
        # Several optimizers (autoencoder + discriminator, generator + critic) step in
        # their declared order on every batch; the first one's loss is the run's loss.
        self.optimizers = runner.optimizers(self.training)
        self.schedulers = {name: build_scheduler(optimizer, self.training)
                           for name, optimizer in self.optimizers.items()}
        # Autocast dtype; under fp16 one loss scaler per optimizer (training/precision.py).
        self.precision = resolve_precision(self.training["precision"], self.device)
        self.scalers = {name: scaler for name in self.optimizers
                        if (scaler := gradient_scaler(self.precision, self.device)) is not None}
        self.log.info("training precision: %s (training.precision %s)", self.precision,
                      self.training["precision"])
        self.model = runner.model         # what `training_step` calls
        if dist.enabled:
            self.model = DistributedModel(runner.model, self.device,
                                          runner.find_unused_parameters or len(self.optimizers) > 1)
        self.stepped = {}           # this batch's optimizers that stepped: name -> (loss, grad norm)
        # Gradient accumulation (training.accumulate_batches): groups of this many consecutive
        # batches, counted from each epoch's first, make one optimizer step.
        self.accumulate = self.training["accumulate_batches"]
        self.parameters = {name: [p for group in optimizer.param_groups for p in group["params"]]
                           for name, optimizer in self.optimizers.items()}
        self.pending = {}           # name -> (gradients, loss sum, losses) of the group in progress
        self.final = True           # the batch in progress ends its group
        self.scalar_sums = {}       # tag -> (sum, count) of the group's logged scalars
        # Under torchrun, a group's batches before its last back-propagate in DDP's `no_sync`
        # (one all-reduce per step) when one optimizer owns every gradient. With several, each
        # optimizer's gradients are set aside while another's loss back-propagates, and DDP
        # (find_unused_parameters) would all-reduce the set-aside ones at the next synced
        # backward: there every batch's backward all-reduces, as without accumulation.
        self.sync_once = dist.enabled and len(self.optimizers) == 1
        self.writer = None
        self.interrupted_by = None  # the signal that stopped `run()` early, e.g. "SIGINT"
        # Counters saved in every checkpoint.
        self.epoch = 1              # the epoch in progress (or next to start)
        self.iteration = 0          # optimizer steps taken, all epochs together
        self.loader_position = None  # position inside `epoch` when resuming mid-epoch
        # Running sum (a float64 tensor once a step is taken) and count of this epoch's
        # training losses; a float pair in checkpoints.
        self.epoch_loss = [0.0, 0]
        self.best_validation = math.inf
        self.bad_epochs = 0
        self.nan_streak = 0
        self.history: list[dict] = []

    @property
    def validation_name(self) -> str:
        """What the runner's validation loss is (its training loss's name unless it says)."""
        return getattr(self.runner, "validation_loss_name", None) or self.runner.loss_name

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first (for most families the only) optimizer."""
        return next(iter(self.optimizers.values()))

    # --- checkpoints -----------------------------------------------------------

    def state(self, epoch_complete: bool, loader_position=None) -> dict | None:
        """The checkpoint (on rank 0; None on the others). Every rank must call it."""
        # Sent as torch.save bytes: what a checkpoint holds, loadable with weights_only.
        ranks = self.dist.gather_to_main(saved_bytes(self.rank_state(loader_position)))
        if not self.dist.is_main:
            return None
        ranks = [torch.load(io.BytesIO(data), weights_only=True) for data in ranks]
        return {
            "format": 3,
            "package_version": __version__,
            "model_type": self.config["model"]["type"],
            "config": self.config,
            "model": self.runner.model.state_dict(),
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "schedulers": {name: scheduler.state_dict() if scheduler else None
                           for name, scheduler in self.schedulers.items()},
            "scalers": {name: scaler.state_dict() for name, scaler in self.scalers.items()},
            "ranks": ranks,
            "loop": {
                "epoch": self.epoch, "epoch_complete": epoch_complete, "iteration": self.iteration,
                "best_validation": self.best_validation, "bad_epochs": self.bad_epochs,
                "nan_streak": self.nan_streak, "history": self.history,
            },
        }

    def resume(self) -> bool:
        latest = self.experiment.latest_checkpoint(map_location=self.device)
        if latest is None:      # a new experiment: from random weights, or those of `init --init-from`
            source = load_initial_weights(self.runner.model, self.experiment, self.device)
            if source is not None:
                self.log.info("initial weights: %s (%s epoch %s, not its optimizer)",
                              self.experiment.initial_weights_path, source["experiment"], source["epoch"])
            return False
        path, state = latest
        self.runner.model.load_state_dict(state["model"])
        if "optimizers" not in state:     # format 1: a single optimizer and scheduler
            state["optimizers"], state["schedulers"] = ({"model": state["optimizer"]},
                                                        {"model": state["scheduler"]})
        if set(state["optimizers"]) != set(self.optimizers):
            raise UserError(f"{path}: checkpoint optimizers {sorted(state['optimizers'])} do not "
                            f"match the model's {sorted(self.optimizers)}")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            if self.schedulers[name] and state["schedulers"][name]:
                self.schedulers[name].load_state_dict(state["schedulers"][name])
        for name, scaler in self.scalers.items():     # fp16; a checkpoint of another precision has none
            if name in state.get("scalers", {}):
                scaler.load_state_dict(state["scalers"][name])
        loop = state["loop"]
        self.iteration = loop["iteration"]
        self.best_validation, self.bad_epochs = loop["best_validation"], loop["bad_epochs"]
        self.nan_streak, self.history = loop["nan_streak"], loop["history"]
        self.restore_rank_state(saved_rank_states(state), loop, path)
        self.log.info("resumed from %s (epoch %d, iteration %d)", path, self.epoch, self.iteration)
        return True

    # --- what each rank alone knows -------------------------------------------------

    def rank_state(self, loader_position) -> dict:
        """This rank's loader position, carried states, RNG and running loss (CPU tensors)."""
        return {"loader": loader_position, "runner": move_tensors(self.runner.state_dict(), "cpu"),
                "rng": rng_state(), "epoch_loss": [float(self.epoch_loss[0]), self.epoch_loss[1]]}

    def restore_rank_state(self, ranks: list[dict], loop: dict, path) -> None:
        """Each rank takes its own entry. A mid-epoch checkpoint of another number of ranks
        cannot continue the epoch (the shards differ): the epoch restarts from its start."""
        mine = ranks[self.dist.rank] if self.dist.rank < len(ranks) else None
        if mine is not None:    # a rank the checkpoint did not have keeps its fresh seed
            set_rng_state(mine["rng"])
            self.runner.load_state_dict(move_tensors(mine["runner"], self.device))
        self.epoch, self.loader_position, self.epoch_loss = loop["epoch"], None, [0.0, 0]
        if loop["epoch_complete"]:
            self.epoch += 1
        elif len(ranks) == self.dist.world_size:
            self.loader_position, self.epoch_loss = mine["loader"], list(mine["epoch_loss"])
        else:
            self.log.warning("%s was written in the middle of epoch %d by %d process(es), this run "
                             "has %d: epoch %d restarts from its first batch (the %d steps already "
                             "taken stay in the model)", path, self.epoch, len(ranks),
                             self.dist.world_size, self.epoch, self.iteration)

    def save_partial(self, loader_position) -> None:
        state = self.state(epoch_complete=False, loader_position=loader_position)
        if self.dist.is_main:
            atomic_torch_save(self.experiment.partial_checkpoint_path, state)
            self.log.info("checkpoint: %s (iteration %d)", self.experiment.partial_checkpoint_path,
                          self.iteration)

    def save_epoch(self, validation_loss: float) -> None:
        state = self.state(epoch_complete=True)
        if not self.dist.is_main:
            return
        experiment = self.experiment
        atomic_torch_save(experiment.checkpoint_path(self.epoch), state)
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

    def step(self, batch, final: bool = True) -> torch.Tensor | None:
        """One batch: the runner's `training_step`, which hands each loss to `optimize`.
        `final`: the batch ends its accumulation group (always, with accumulate_batches 1),
        so the optimizers step after its backward; the batches before it only accumulate
        gradients (under torchrun in `no_sync` when there is one optimizer: one all-reduce
        per step; see `sync_once`). Returns the first optimizer's loss (a detached tensor;
        the group's mean), or None when it did not step (an accumulating batch, the NaN
        guard, or the runner left it out)."""
        self.runner.model.train()
        self.stepped = {}        # name -> (loss, grad norm) of the optimizers that stepped
        self.final = final
        no_sync = self.model.no_sync() if self.sync_once and not final else nullcontext()
        with no_sync, autocast(self.precision, self.device):
            scalars = self.runner.training_step(self.model, batch, self.optimize)
        scalars = self.group_scalars(scalars, final)
        if not final:
            return None
        for name in list(self.pending):   # called on earlier batches of the group only
            self.apply(name, synced=not self.sync_once)
        if not self.stepped:
            return None
        self.iteration += 1
        primary = next(iter(self.optimizers))
        value = self.stepped[primary][0] if primary in self.stepped else None
        if self.iteration % self.log_period == 0:
            self.log_step(scalars)
        return value

    def group_scalars(self, scalars: dict, final: bool) -> dict:
        """The logged scalars of an accumulation group: each one's mean over the group's
        batches that returned it (summed on the device; nothing is read here)."""
        if self.accumulate == 1:
            return scalars
        for tag, value in scalars.items():
            total, count = self.scalar_sums.get(tag, (0.0, 0))
            self.scalar_sums[tag] = (total + value.detach().float(), count + 1)
        if not final:
            return {}
        means = {tag: total / count for tag, (total, count) in self.scalar_sums.items()}
        self.scalar_sums = {}
        return means

    def optimize(self, name: str, loss: torch.Tensor) -> bool:
        """Back-propagate `loss` for optimizer `name` into its gradients of the group in
        progress (the `Optimize` a runner is given); on the group's last batch, `apply` them.
        Every other optimizer's gradients are cleared first: one optimizer's gradients hold
        its own losses only (a generator loss also reaches the critic's parameters).
        Returns True for an accumulated batch, else whether the step was taken."""
        parameters = self.parameters[name]
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        gradients, loss_sum, count = self.pending.get(name, ([None] * len(parameters), 0.0, 0))
        for parameter, gradient in zip(parameters, gradients):
            parameter.grad = gradient
        scaler = self.scalers.get(name)
        with torch.autocast(device_type=self.device.type, enabled=False):
            (loss if scaler is None else scaler.scale(loss)).backward()
        self.pending[name] = ([p.grad for p in parameters], loss_sum + loss.detach(), count + 1)
        return self.apply(name) if self.final else True

    def apply(self, name: str, synced: bool = True) -> bool:
        """Step optimizer `name` with the mean gradient of its group's losses: unscale
        (fp16), divide by their number, clip, NaN guard, step.

        The NaN guard's decision is the one read from the device: loss and gradient-norm
        finiteness in one tensor, one `.item()` (and under torchrun one all-reduce). Under
        fp16 the gradients are unscaled first, so the guard and the scaler see the same
        gradients: a non-finite one skips the step in both (`skip`). `synced` False: the
        gradients were all accumulated in `no_sync` (an optimizer left out of the group's
        last batch), so they are averaged over the ranks here."""
        gradients, loss_sum, count = self.pending.pop(name)
        optimizer, scaler, parameters = self.optimizers[name], self.scalers.get(name), self.parameters[name]
        for parameter, gradient in zip(parameters, gradients):
            parameter.grad = gradient
        present = [g for g in gradients if g is not None]
        if not synced:
            self.dist.average(present)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if count > 1 and present:
            torch._foreach_div_(present, float(count))
        loss = loss_sum / count
        clip = self.training["gradient_clip"]
        if clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        else:
            norms = [g.norm() for g in present]
            grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        non_finite = ~(torch.isfinite(loss) & torch.isfinite(grad_norm.to(loss.device)))
        if self.dist.any_true(non_finite, self.device):   # every rank takes the same decision
            return self.skip(name, loss)
        self.nan_streak = 0
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)      # finite gradients, as unscale_ found: it steps
            scaler.update()
        self.stepped[name] = (loss, grad_norm.detach())
        return True

    def skip(self, name: str, loss: torch.Tensor) -> bool:
        """The NaN guard: a step with a non-finite loss or gradient is not taken.

        Under fp16 a finite loss whose scaled gradient overflowed is the scaler's business:
        it lowers its scale (`update` after `unscale_` found the overflow) and the step is
        skipped without counting in `nan_streak`, unless the scale is already below 1 (the
        gradient overflows unscaled: a real divergence). Every other skip counts, and
        `training.nan_tolerance` of them in a row stop training."""
        optimizer, scaler = self.optimizers[name], self.scalers.get(name)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            overflow = (scaler.get_scale() >= 1
                        and not self.dist.any_true(~torch.isfinite(loss), self.device))
            scaler.update()
            if overflow:
                self.log.info("iteration %d: fp16 gradient overflow in %s, step skipped, loss scale "
                              "now %g", self.iteration + 1, name, scaler.get_scale())
                return False
        self.nan_streak += 1
        self.runner.on_skipped_step()
        self.log.warning("iteration %d: non-finite %s loss or gradient, step skipped (%d in a row)",
                         self.iteration + 1, name, self.nan_streak)
        if self.nan_streak >= self.training["nan_tolerance"]:
            raise TrainingError(
                f"training stopped: {self.nan_streak} non-finite losses in a row "
                f"(lower training.learning_rate or training.gradient_clip)")
        return False

    def log_step(self, scalars: dict) -> None:
        """TensorBoard and the log line of a logged step: the tensors are read here only."""
        several = len(self.optimizers) > 1
        losses = {name: float(loss) for name, (loss, _) in self.stepped.items()}
        if self.writer is not None:
            logged = {}
            for name, (loss, grad_norm) in self.stepped.items():
                prefix = f"{name}/" if several else ""
                logged[f"{prefix}grad_norm"] = float(grad_norm)
                logged[f"{prefix}lr"] = self.optimizers[name].param_groups[0]["lr"]
                if several:
                    logged[f"{name}_loss"] = losses[name]
            logged.update({tag: float(value) for tag, value in scalars.items()})
            for tag, value in logged.items():
                self.writer.add_scalar(f"train/{tag}", value, self.iteration)
        names = ({name: self.runner.loss_name for name in losses} if not several
                 else {name: f"{name}_loss" for name in losses})
        self.log.info("epoch %d iteration %d %s", self.epoch, self.iteration,
                      " ".join(f"{names[name]} {loss:.9g}" for name, loss in losses.items()))

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
                    total, done = len(batches), batches.position   # done: already trained (resume)
                    if self.runner.context.num_workers > 0:
                        batches = Prefetcher(batches, self.runner.context.num_workers)
                    self.loader_position = None
                    epoch_started = time.time()
                    bar = progress(batches, desc=f"epoch {self.epoch}", enabled=self.dist.is_main,
                                   log=self.log, total=total, initial=done)
                    for position, batch in enumerate(bar, start=done):
                        # The last batch of a group of accumulate_batches, or of the epoch.
                        final = (position + 1) % self.accumulate == 0 or position + 1 == total
                        iteration_before = self.iteration
                        loss = self.step(batch, final)
                        if loss is not None:   # summed on the device, read at the epoch's end
                            self.epoch_loss[0] = self.epoch_loss[0] + loss.double()
                            self.epoch_loss[1] += 1
                            if self.iteration % self.log_period == 0:
                                bar.set_postfix({self.runner.loss_name: f"{float(loss):.4f}"})
                        stop = self.dist.any_true(interrupted.signal is not None, self.device)
                        if not final:   # checkpoints at optimizer-step boundaries only: a signal
                            continue    # waits for the group's last batch (< accumulate_batches)
                        stepped = self.iteration != iteration_before
                        if stop or (checkpoint_period and stepped
                                    and self.iteration % checkpoint_period == 0):
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
        with side_stream(self.config["seed"], self.epoch, self.dist.rank, VALIDATION_STREAM):
            loss_sum, count = self.runner.validation_loss()
        loss_sum, count = self.dist.all_reduce_sum([loss_sum, count], self.device)
        validation = loss_sum / max(count, 1)
        train_loss = float(self.epoch_loss[0]) / max(self.epoch_loss[1], 1)
        for scheduler in self.schedulers.values():
            step_scheduler(scheduler, validation)
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
                      train_loss, self.validation_name, validation, " (best)" if improved else "",
                      self.epoch_loss[1], train_seconds, time.time() - started, self.iteration,
                      extra={"summary": True})
        if self.writer is not None:
            self.writer.add_scalar(f"epoch/train_{self.runner.loss_name}", train_loss, self.epoch)
            self.writer.add_scalar(f"epoch/validation_{self.validation_name}", validation, self.epoch)
        self.save_epoch(validation)
        period = self.config["test"]["period"]
        if test_callback is not None and period and self.epoch % period == 0:
            test_callback(self.epoch, self.writer)   # every rank renders its share (Runner.test)
        patience = self.training["early_stopping_patience"]
        if patience is not None and self.bad_epochs >= patience:
            self.log.warning("early stopping: validation loss has not improved for %d epochs",
                             self.bad_epochs)
            return True
        return False


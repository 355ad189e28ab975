"""The shared training loop with a small regression runner: NaN guard, early stopping,
keep-last-N + best checkpoints, scheduler, resume from an epoch checkpoint."""

import logging
import math

import pytest
import torch
from torch import nn

from samplernn_pase.experiment.config import fill_defaults, load_schema
from samplernn_pase.experiment.folder import Experiment
from samplernn_pase.runners.base import Runner, RunContext
from samplernn_pase.training.distributed import Distributed
from samplernn_pase.training.loop import Trainer, TrainingError


class Batches:
    def __init__(self, count, position=None):
        self.count, self.position = count, (position or {}).get("position", 0)

    def __len__(self):
        return self.count

    def __iter__(self):
        while self.position < self.count:
            self.position += 1
            yield self.position

    def state_dict(self):
        return {"position": self.position}


class LineRunner(Runner):
    """Fits y = 3x; `poison` makes chosen steps non-finite; `validation` scripts the
    validation losses per epoch (None: the real one)."""

    def __init__(self, context, poison=(), validation=None, overflow=()):
        self.poison, self.validation, self.steps = set(poison), validation, 0
        self.overflow = set(overflow)     # steps whose loss is finite but 1e36 times too steep
        self.output_dtypes = []           # the autocast dtype each step computed in
        super().__init__(context)

    def build_model(self):
        return nn.Linear(1, 1)

    def train_batches(self, epoch, position):
        self.epoch = epoch
        return Batches(4, position)

    def training_step(self, model, batch, optimize):
        self.steps += 1
        x = torch.linspace(-1, 1, 16, device=self.device)[:, None]
        output = model(x)
        self.output_dtypes.append(output.dtype)
        loss = ((output.float() - 3 * x) ** 2).mean()
        if self.steps in self.poison:
            loss = loss * float("nan")
        if self.steps in self.overflow:
            loss = loss * 1e36
        return {self.loss_name: loss.detach()} if optimize("model", loss) else {}

    def test_plan(self, utterance_ids, speaker_set):   # test.period is None: never rendered
        return []

    def render(self, epoch, items, speaker_set):
        return []

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        return {"epoch": epoch}

    def validation_loss(self):
        if self.validation is not None:
            return self.validation[self.epoch - 1], 1
        with torch.no_grad():
            x = torch.linspace(-1, 1, 16)[:, None]
            return float(((self.model(x) - 3 * x) ** 2).mean()), 1


def make(tmp_path, training=None, device="cpu", runner_class=None, **runner_options):
    config = {"seed": 0, "model": {"type": "line"}, "test": {"period": None},
              "training": fill_defaults(load_schema("training"), dict(training or {}))}
    experiment = Experiment(tmp_path, "loop")
    experiment.root.mkdir(parents=True, exist_ok=True)
    context = RunContext(experiment=experiment, config=config, data_path=tmp_path,
                         device=torch.device(device), log=logging.getLogger("test-loop"))
    torch.manual_seed(0)
    return experiment, (runner_class or LineRunner)(context, **runner_options)


def test_loop_trains_and_keeps_last_n_plus_best(tmp_path):
    scripted = [5.0, 1.0, 4.0, 3.0, 2.5, 2.4]          # best at epoch 2
    experiment, runner = make(tmp_path, {"keep_checkpoints": 2, "max_epochs": 6,
                                         "early_stopping_patience": None, "learning_rate": 0.05},
                              validation=scripted)
    Trainer(experiment, runner, Distributed()).run()
    assert experiment.checkpoint_epochs() == [2, 5, 6]
    index = experiment.checkpoint_index()
    assert index["best_epoch"] == 2 and sorted(index["epochs"]) == ["2", "5", "6"]
    assert not experiment.partial_checkpoint_path.exists()


def test_early_stopping_and_plateau_scheduler(tmp_path):
    scripted = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    experiment, runner = make(tmp_path, {"max_epochs": 7, "early_stopping_patience": 3,
                                         "scheduler": {"patience": 1, "factor": 0.5}},
                              validation=scripted)
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    assert experiment.checkpoint_epochs()[-1] == 4        # 3 epochs without improvement
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * 0.5)


def test_nan_guard_skips_steps_then_stops(tmp_path):
    experiment, runner = make(tmp_path, {"max_epochs": 1, "nan_tolerance": 3}, poison={2})
    before = [p.detach().clone() for p in runner.model.parameters()]
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    assert trainer.iteration == 3                          # 4 batches, one skipped
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, runner.model.parameters()))

    experiment, runner = make(tmp_path / "again", {"max_epochs": 2, "nan_tolerance": 3},
                              poison={3, 4, 5})
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        Trainer(experiment, runner, Distributed()).run()


def test_resume_from_epoch_checkpoint_continues_the_same_run(tmp_path):
    experiment, runner = make(tmp_path / "a", {"max_epochs": 3, "learning_rate": 0.05})
    Trainer(experiment, runner, Distributed()).run()
    straight = [p.detach().clone() for p in runner.model.parameters()]

    experiment, runner = make(tmp_path / "b", {"max_epochs": 3, "learning_rate": 0.05})
    Trainer(experiment, runner, Distributed(), max_epochs=1).run()
    experiment, runner = make(tmp_path / "b", {"max_epochs": 3, "learning_rate": 0.05})
    trainer = Trainer(experiment, runner, Distributed())
    assert trainer.resume() and trainer.epoch == 2
    trainer.run()
    for a, b in zip(straight, runner.model.parameters()):
        assert torch.equal(a, b)
    assert math.isfinite(experiment.checkpoint_index()["epochs"]["3"]["validation_loss"])


def test_a_runner_must_implement_every_hook(tmp_path):
    class Partial(Runner):
        def build_model(self):
            return nn.Linear(1, 1)

    experiment, runner = make(tmp_path)
    with pytest.raises(TypeError, match="abstract"):
        Partial(runner.context)


class TwoOptimizerRunner(LineRunner):
    """Two parts with their own optimizers, like an autoencoder and its discriminator:
    `a` steps on every batch, `b` only on even batches."""

    def build_model(self):
        return nn.ModuleDict({"a": nn.Linear(1, 1), "b": nn.Linear(1, 1)})

    def optimizers(self, training):
        from samplernn_pase.training.optim import build_optimizer
        return {"a": build_optimizer(self.model["a"].parameters(), training),
                "b": build_optimizer(self.model["b"].parameters(), training, lr=0.1, betas=(0.5, 0.9))}

    def training_step(self, model, batch, optimize):
        x = torch.linspace(-1, 1, 16)[:, None]
        logged = {}
        for name, target in (("a", 3 * x), ("b", -2 * x)):
            if name == "b" and batch % 2:
                continue
            loss = ((model[name](x) - target) ** 2).mean()
            if optimize(name, loss) and name == "a":
                logged[self.loss_name] = loss.detach()
        return logged

    def validation_loss(self):
        with torch.no_grad():
            x = torch.linspace(-1, 1, 16)[:, None]
            return float(((self.model["a"](x) - 3 * x) ** 2).mean()), 1


def make_two(tmp_path, training):
    experiment, runner = make(tmp_path, training)
    torch.manual_seed(0)
    return experiment, TwoOptimizerRunner(runner.context)


def test_several_optimizers_step_in_order_and_resume_exactly(tmp_path):
    training = {"max_epochs": 3, "learning_rate": 0.05}
    experiment, runner = make_two(tmp_path / "a", training)
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    straight = [p.detach().clone() for p in runner.model.parameters()]
    # `a` stepped on all 12 batches, `b` on the 6 even ones, each with its own settings.
    assert [trainer.optimizers[n].state_dict()["state"][0]["step"].item() for n in "ab"] == [12, 6]
    assert trainer.optimizers["b"].param_groups[0]["betas"] == (0.5, 0.9)
    state = torch.load(experiment.checkpoint_path(3), weights_only=True)
    assert set(state["optimizers"]) == {"a", "b"} and set(state["schedulers"]) == {"a", "b"}

    experiment, runner = make_two(tmp_path / "b", training)
    Trainer(experiment, runner, Distributed(), max_epochs=1).run()
    experiment, runner = make_two(tmp_path / "b", training)
    trainer = Trainer(experiment, runner, Distributed())
    assert trainer.resume() and trainer.epoch == 2
    trainer.run()
    for a, b in zip(straight, runner.model.parameters()):
        assert torch.equal(a, b)


def test_mid_epoch_checkpoint_of_another_world_size_restarts_the_epoch(tmp_path, caplog):
    from samplernn_pase.experiment.folder import atomic_torch_save, torch_load

    experiment, runner = make(tmp_path, {"max_epochs": 2, "checkpoint_period": 3})
    trainer = Trainer(experiment, runner, Distributed())
    batches = runner.train_batches(1, None)
    for batch in batches:                       # three steps into epoch 1, then a checkpoint
        trainer.step(batch)
        if trainer.iteration == 3:
            break
    trainer.save_partial(batches.state_dict())
    state = torch_load(experiment.partial_checkpoint_path)
    assert len(state["ranks"]) == 1 and state["ranks"][0]["loader"] == {"position": 3}

    # The same run resumes at batch 4 of epoch 1 with its own RNG state.
    experiment, runner = make(tmp_path, {"max_epochs": 2, "checkpoint_period": 3})
    resumed = Trainer(experiment, runner, Distributed())
    assert resumed.resume() and resumed.epoch == 1 and resumed.loader_position == {"position": 3}

    # Written by two processes: one rank cannot continue both shards, the epoch restarts.
    state["ranks"] = state["ranks"] * 2
    atomic_torch_save(experiment.partial_checkpoint_path, state)
    experiment, runner = make(tmp_path, {"max_epochs": 2, "checkpoint_period": 3})
    restarted = Trainer(experiment, runner, Distributed())
    with caplog.at_level(logging.WARNING, logger="test-loop"):
        assert restarted.resume()
    assert restarted.epoch == 1 and restarted.loader_position is None and restarted.iteration == 3
    assert any("by 2 process(es), this run has 1: epoch 1 restarts from its first batch" in r.getMessage()
               for r in caplog.records)


def test_architecture_md_describes_the_checkpoint_the_loop_writes(tmp_path):
    """docs/ARCHITECTURE.md's "Checkpoints" section names the format number of a checkpoint the
    loop wrote and every one of its top-level keys, in backquotes."""
    import re
    from pathlib import Path

    experiment, runner = make(tmp_path, {"max_epochs": 1})
    Trainer(experiment, runner, Distributed()).run()
    state = torch.load(experiment.checkpoint_path(1), weights_only=True)
    text = (Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Checkpoints", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"\(format (\d+)\)", section) == [str(state["format"])]
    named = set(re.findall(r"`(\w+)`", section))
    assert set(state) - {"format"} <= named, f"not described: {sorted(set(state) - {'format'} - named)}"


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("auto", torch.float32),
                                              ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_precision_autocasts_the_steps_on_the_cpu(tmp_path, precision, dtype):
    """"auto" is fp32 on the CPU; "bf16" and "fp16" autocast there too (torch's CPU autocast)."""
    experiment, runner = make(tmp_path, {"max_epochs": 2, "learning_rate": 0.05, "precision": precision})
    x = torch.linspace(-1, 1, 16)[:, None]
    with torch.no_grad():
        initial = float(((runner.model(x) - 3 * x) ** 2).mean())
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    assert set(runner.output_dtypes) == {dtype}
    skipped = 8 - trainer.iteration     # fp16: the first scaled gradients overflow (scale 2^16)
    assert skipped == 0 or precision == "fp16"
    if precision == "fp16":             # each overflow halved the scale; no growth in 8 steps
        assert trainer.scalers["model"].get_scale() == 2.0 ** (16 - skipped)
    with torch.no_grad():          # the steps taken learned y = 3x (lr 0.05, Adam: 0.05 each)
        assert float(((runner.model(x) - 3 * x) ** 2).mean()) < initial - 0.5
    state = torch.load(experiment.checkpoint_path(2), weights_only=True)
    assert (set(state["scalers"]) == {"model"}) == (precision == "fp16")


def test_fp16_scaler_skips_overflows_without_the_nan_guard_and_resumes(tmp_path):
    """A finite loss whose scaled gradient overflows: the GradScaler halves its scale and the
    step is skipped, not counted by the NaN guard (three in a row, tolerance 2); a NaN loss
    still counts. The scale is in the checkpoint and restored on resume."""
    training = {"max_epochs": 2, "precision": "fp16", "nan_tolerance": 2, "learning_rate": 0.05}
    experiment, runner = make(tmp_path / "a", training, overflow={2, 3, 4}, poison={6})
    trainer = Trainer(experiment, runner, Distributed())
    trainer.run()
    skipped = 8 - trainer.iteration
    assert skipped >= 4 and trainer.nan_streak == 0     # 3 overflows and the NaN, at least
    assert trainer.scalers["model"].get_scale() == 2.0 ** (16 - skipped)   # halved by each
    state = torch.load(experiment.checkpoint_path(2), weights_only=True)
    assert state["scalers"]["model"]["scale"] == 2.0 ** (16 - skipped)
    straight = [p.detach().clone() for p in runner.model.parameters()]

    experiment, runner = make(tmp_path / "b", training, overflow={2, 3, 4}, poison={6})
    Trainer(experiment, runner, Distributed(), max_epochs=1).run()
    experiment, runner = make(tmp_path / "b", training)
    runner.steps = 4             # the scripted steps are behind: epoch 2 poisons its second
    runner.poison = {6}
    trainer = Trainer(experiment, runner, Distributed())
    saved = torch.load(experiment.checkpoint_path(1), weights_only=True)["scalers"]["model"]["scale"]
    assert saved < 2.0 ** 13 and trainer.resume() and trainer.scalers["model"].get_scale() == saved
    trainer.run()
    for a, b in zip(straight, runner.model.parameters()):
        assert torch.equal(a, b)

    experiment, runner = make(tmp_path / "c", training, poison={2, 3})
    with pytest.raises(TrainingError, match="2 non-finite losses in a row"):
        Trainer(experiment, runner, Distributed()).run()


def test_exponential_scheduler_multiplies_the_rate_by_gamma_every_epoch_whatever_the_loss():
    """training.scheduler "exponential" (HiFi-GAN's): after k epochs the rate is lr * gamma^k,
    the closed form, whatever the validation loss does."""
    from samplernn_pase.training.optim import build_optimizer, build_scheduler, step_scheduler
    training = {"optimizer": "adamw", "learning_rate": 2e-4, "weight_decay": 0.0, "adam_betas": [0.8, 0.99],
                "scheduler": {"type": "exponential", "gamma": 0.9}}
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(3))], training)
    scheduler = build_scheduler(optimizer, training)
    for epoch, loss in enumerate([1.0, 0.5, 2.0, 2.0], start=1):
        optimizer.step()                                   # an epoch's steps, then the scheduler's
        step_scheduler(scheduler, loss)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.9 ** epoch, rel=1e-12)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)

"""Optimizers and learning-rate schedulers built from the `training` config.

A runner declares its optimizers (runners/base.py `Runner.optimizers`); most
families have one, the adversarial ones (autoencoder + discriminator,
generator + critic) have two. The runner's `training_step` steps them, in
its order, through the loop's `Optimize`; the checkpoints keep all of them.
"""

from typing import Protocol

import torch


def build_optimizer(parameters, training: dict, **overrides) -> torch.optim.Optimizer:
    """The optimizer named by `training.optimizer`, with `training.adam_betas` for Adam(W);
    `overrides` replace its settings (e.g. another `lr` for a GAN critic)."""
    kind = training["optimizer"]
    settings = {"lr": training["learning_rate"], "weight_decay": training["weight_decay"]}
    if kind == "sgd":
        settings["momentum"] = 0.9
    elif training.get("adam_betas") is not None:
        settings["betas"] = tuple(training["adam_betas"])
    settings.update(overrides)
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                       "sgd": torch.optim.SGD}[kind]
    return optimizer_class(parameters, **settings)


def build_scheduler(optimizer, training: dict):
    """ReduceLROnPlateau on the validation loss, ExponentialLR (HiFi-GAN's), or None."""
    settings = training["scheduler"]
    if settings["type"] == "none":
        return None
    if settings["type"] == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.get("gamma", 0.999))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings["factor"], patience=settings["patience"],
        min_lr=settings["min_lr"])


def step_scheduler(scheduler, validation_loss: float) -> None:
    """The end of an epoch: a plateau scheduler reads the validation loss, the others count epochs."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(validation_loss)
    elif scheduler is not None:
        scheduler.step()


class Optimize(Protocol):
    """What `Runner.training_step` calls for each optimizer that steps on a batch, given by
    the loop (training/loop.py `Trainer.optimize`): clear the other optimizers' gradients,
    back-propagate `loss` into those of optimizer `name`, and on the last batch of a
    `training.accumulate_batches` group clip, apply the NaN guard and step it with the
    group's mean gradient. Returns True for a batch that only accumulated, else whether
    the step was taken (False: the NaN guard skipped it)."""

    def __call__(self, name: str, loss: torch.Tensor) -> bool: ...

"""Optimizers and learning-rate schedulers built from the `training` config.

A runner declares its optimizers (runners/base.py `Runner.optimizers`); most
families have one, the adversarial ones (autoencoder + discriminator,
generator + critic) have two. The loop steps them in the declared order on
every batch and keeps all of them in the checkpoints.
"""

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
    """ReduceLROnPlateau on the validation loss, or None."""
    settings = training["scheduler"]
    if settings["type"] == "none":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings["factor"], patience=settings["patience"],
        min_lr=settings["min_lr"])

"""Checkpoint -> model: the one place where trained weights are read into a model.

`test`, `test_sample` and `synthesize` load their runner's model here (from an
experiment, or from a release unpacked into one), `create_release` takes the
weights from here, and an experiment built on another (SampleRNN on a PASE
experiment, the GPT prior on a VQ-VAE experiment) loads that one's model here
(`load_pase`, `load_vqvae_codec`) and hands it to the data code that uses it
(data/speaker_seeds.py, data/vqvae_codes.py), which sits below the experiment
in the layer order.
"""

from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import UserError
from .folder import Experiment, torch_load


def checkpoint_weights(experiment: Experiment, epoch: int, map_location="cpu") -> dict:
    """The model weights (state dict) of the experiment's epoch checkpoint."""
    return torch_load(experiment.checkpoint_path(epoch), map_location=map_location)["model"]


def load_weights(model: nn.Module, experiment: Experiment, epoch: int, device="cpu") -> nn.Module:
    """`model`, on `device`, with the weights of the experiment's epoch checkpoint."""
    model.load_state_dict(checkpoint_weights(experiment, epoch, map_location=device))
    return model.to(device)


def named_experiment(experiments_path: Path, name: str, epoch: int | str | None, model_type: str,
                     field: str) -> tuple[Experiment, dict, int]:
    """(experiment, config, epoch) of another experiment a config names by `field`
    (a PASE experiment for SampleRNN, a VQ-VAE experiment for the GPT prior); errors name `field`.

    `epoch`: a checkpoint epoch, None for the latest, "best" for the lowest validation loss.
    """
    experiment = Experiment(experiments_path, name)
    if not experiment.exists():
        raise UserError(f"{field}: no such experiment {experiment.root}")
    config = experiment.config()
    if config["model"]["type"] != model_type:
        raise UserError(f"{field}: {name} is a {config['model']['type']} experiment, not {model_type}")
    if epoch == "best":
        epoch = experiment.checkpoint_index().get("best_epoch")
        if epoch is None:
            raise UserError(f"{field}: {name} has no validated checkpoint to call best (train it first)")
    if epoch is not None and epoch not in experiment.checkpoint_epochs():
        available = ", ".join(map(str, experiment.checkpoint_epochs())) or "none"
        raise UserError(f"{field}: {name} has no checkpoint of epoch {epoch} (available: {available})")
    return experiment, config, experiment.resolve_epoch(epoch)


def load_named_model(experiments_path: Path, name: str, epoch: int | str | None, model_type: str,
                     field: str, build: Callable[[dict], nn.Module], device="cpu"
                     ) -> tuple[nn.Module, int]:
    """(model in eval mode, epoch loaded) of another experiment (see `named_experiment`);
    `build(config)` makes the family's model from that experiment's config."""
    experiment, config, epoch = named_experiment(experiments_path, name, epoch, model_type, field)
    return load_weights(build(config), experiment, epoch, device).eval(), epoch


def load_pase(experiments_path: Path, name: str, epoch: int | str | None, device="cpu") -> nn.Module:
    """The PASE encoder (eval mode) of the experiment a SampleRNN config names."""
    from ..models.pase import PASE, PASEConfig   # here: librosa's import is slow
    model, _ = load_named_model(experiments_path, name, epoch, "pase", "model.pase_experiment",
                                lambda config: PASE(PASEConfig.from_dict(config["model"])), device)
    return model


def load_vqvae_codec(experiments_path: Path, name: str, epoch: int | str | None = None,
                     device="cpu"):
    """The frozen VQ-VAE (data/vqvae_codes.py `VQVAECodec`) of the experiment a GPT prior
    names, with its mels (`epoch`: an epoch, None for the latest, "best")."""
    from ..data.mel_crops import MelCrops
    from ..data.vqvae_codes import VQVAECodec
    from ..models.vqvae import MelVQVAE, VQVAEConfig
    model, epoch = load_named_model(experiments_path, name, epoch, "vqvae", "model.vqvae_experiment",
                                    lambda config: MelVQVAE(VQVAEConfig.from_dict(config["model"])),
                                    device)
    return VQVAECodec(model, MelCrops.of_experiment(Path(experiments_path) / name), name, epoch, device)

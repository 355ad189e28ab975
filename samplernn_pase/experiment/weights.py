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

import torch
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


def load_initial_weights(model: nn.Module, experiment: Experiment, map_location="cpu") -> dict | None:
    """The weights `init --init-from` wrote, loaded into `model` before the first checkpoint
    exists; the `init_from` record of config.json, or None for an experiment without them."""
    if not experiment.initial_weights_path.is_file():
        return None
    model.load_state_dict(torch_load(experiment.initial_weights_path, map_location=map_location)["model"])
    return experiment.config().get("init_from")


def transferred_weights(source: dict, source_speakers: list[dict], target: dict,
                        target_speakers: list[dict], speaker_tables: dict[str, tuple[int, int]],
                        what: str, data_tables: frozenset[str] = frozenset()) -> dict:
    """The state dict `target` (a new model's) filled from `source` (another experiment's
    checkpoint of the same architecture, `what` in errors): every tensor copied, except the
    speaker rows of `speaker_tables` ({key: (first row, rows per speaker)}: speaker index s owns
    rows first + s * per up to first + (s + 1) * per), mapped by speaker id. A speaker new to
    the target, or never trained there (not a modeling speaker of `source_speakers`), gets
    the mean of the source's trained speakers' rows; in the tables of `data_tables` (those the
    target's family fills from its own data when it builds a model, such as the acoustic model's
    per-symbol means) it keeps the target's rows, its own data's, instead."""
    counts = (len(source_speakers), len(target_speakers))
    difference = first_difference(source, target, speaker_tables, counts)
    if difference is not None:
        raise UserError(f"{what}: the architectures differ at {difference}")
    weights = {}
    for name, want in target.items():
        have = source[name]
        if name in speaker_tables:
            have = mapped_speaker_rows(have, speaker_tables[name], source_speakers, target_speakers,
                                       want if name in data_tables else None)
        weights[name] = have.to(want.dtype).clone()
    return weights


def first_difference(source: dict, target: dict, speaker_tables: dict, counts: tuple[int, int]
                     ) -> str | None:
    """`name: shape there, shape here` of the first parameter (target order, then the source's
    extra ones) whose shape differs; a speaker table's rows may differ by its speakers' rows."""
    for name, want in target.items():
        if name not in source:
            return f"{name}: absent there, {tuple(want.shape)} here"
        have = source[name]
        same = have.shape == want.shape
        if name in speaker_tables and have.dim() >= 1 and have.shape[1:] == want.shape[1:]:
            per = speaker_tables[name][1]
            same = have.shape[0] - counts[0] * per == want.shape[0] - counts[1] * per
        if not same:
            return f"{name}: {tuple(have.shape)} there, {tuple(want.shape)} here"
    extra = next((name for name in source if name not in target), None)
    return None if extra is None else f"{extra}: {tuple(source[extra].shape)} there, absent here"


def mapped_speaker_rows(table: torch.Tensor, rows: tuple[int, int], source_speakers: list[dict],
                        target_speakers: list[dict], own: torch.Tensor | None = None) -> torch.Tensor:
    """A speaker table (see `transferred_weights`) with the target's speakers in its rows; a
    speaker the source did not train gets the mean of its trained rows, or with `own` (the
    target's table) its rows there."""
    first, per = rows
    end = first + len(source_speakers) * per
    blocks = table[first:end].reshape(len(source_speakers), per, *table.shape[1:])
    trained = {s["id"]: s["index"] for s in source_speakers if s["set"] == "modeling"}
    mean = blocks[sorted(trained.values())].float().mean(0).to(table.dtype)

    def new(speaker):
        if own is None:
            return mean
        start = first + speaker["index"] * per
        return own[start:start + per].to(table.dtype)
    ordered = sorted(target_speakers, key=lambda speaker: speaker["index"])
    mapped = [blocks[trained[s["id"]]] if s["id"] in trained else new(s) for s in ordered]
    return torch.cat([table[:first], torch.cat(mapped), table[end:]])


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


def load_vocoder(experiments_path: Path, name: str, epoch: int | str | None = None, device="cpu"):
    """The HiFi-GAN generator (models/hifigan.py `MelVocoder`, weight norm folded in) of the
    experiment a mel family names in `model.vocoder_experiment` (`epoch`: an epoch, None for
    the latest, "best")."""
    from ..models.hifigan import HiFiGAN, HiFiGANConfig, MelVocoder

    def build(config):
        return HiFiGAN(HiFiGANConfig.from_dict(config["model"], sample_rate=config["data"]["sample_rate"]))

    model, epoch = load_named_model(experiments_path, name, epoch, "hifigan", "model.vocoder_experiment",
                                    build, device)
    return MelVocoder(model.generator, model.config, name, epoch, device)

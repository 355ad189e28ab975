"""PASE in the shared loop, and the speaker seeds it gives to SampleRNN experiments.

Training: random chunks of `chunk_seconds` of every training utterance (all
speakers: no labels are used), the weighted worker losses as the loss. Test:
the held-out worker losses and how well seeds tell speakers apart (mean
cosine similarity of seeds of the same speaker vs. of different speakers),
with the similarity matrix as a PNG.
"""

import json
from pathlib import Path

import numpy as np
import torch

from ..audio.plots import png_to_array, save_images
from ..data.random_chunks import RandomChunkLoader
from ..data.store import UtteranceStore
from ..errors import UserError
from ..experiment.folder import Experiment, atomic_write_json, torch_load
from ..metrics.speaker import cosine_similarity, speaker_identification
from ..models.pase import PASE, PASEConfig, embed, speaker_seed
from .base import Runner


class PASERunner(Runner):
    loss_name = "pase_loss"

    def build_model(self):
        model_config = {k: v for k, v in self.config["model"].items() if k != "type"}
        self.pase_config = PASEConfig.from_dict(model_config)
        if self.pase_config.sample_rate != self.index["sample_rate"]:
            raise UserError(f"model.sample_rate: {self.pase_config.sample_rate} differs from the "
                            f"corpus rate data.sample_rate {self.index['sample_rate']}")
        self.chunk_samples = int(self.pase_config.chunk_seconds * self.pase_config.sample_rate)
        return PASE(self.pase_config)

    @property
    def store_cache_size(self) -> int:
        """Random chunks come from any utterance at any time: keep them all in memory."""
        return len(self.index["utterances"])

    def audio(self, utterance_id: str) -> np.ndarray:
        return self.store.load(utterance_id).audio

    def loader(self, split: str, epoch: int, shuffle: bool) -> RandomChunkLoader:
        utterances = [u for u in self.index["utterances"] if u["split"] == split]
        lengths = [u["num_frames"] * self.index["hop_length"] for u in utterances]
        return RandomChunkLoader(self.audio, [u["id"] for u in utterances], lengths,
                                 self.config["training"]["batch_size"], self.chunk_samples,
                                 self.config["seed"], epoch, self.context.rank,
                                 self.context.world_size, shuffle=shuffle)

    def train_batches(self, epoch, position):
        loader = self.loader("train", epoch, shuffle=True)
        if len(loader) == 0:
            raise UserError("training.batch_size: fewer training chunks than one batch")
        if position is not None:
            loader.load_state_dict(position)
        return loader

    def train_step(self, model, batch, optimizer="model"):
        losses = model(batch.to(self.device))
        scalars = {k: float(v.detach()) for k, v in losses.items() if k != "total"}
        return losses["total"], scalars

    @torch.no_grad()
    def validation_loss(self):
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False):
            total += float(self.model(batch.to(self.device))["total"]) * len(batch)
            count += len(batch)
        return total, count

    def test(self, epoch, out_dir, writer=None, utterance_ids=None, speaker_set="modeling"):
        """How well seeds tell speakers apart, on audio the encoder never trained on.

        Per speaker: seeds (mean frame over `seed_seconds`) of its test split and of its
        train split, their cosine matrix (PNG), same- vs other-speaker mean and
        identification of each test seed. Per utterance: every held-out
        (validation and test) utterance embedded alone and identified by its nearest
        train seed (metrics/speaker.py: speaker_identification).
        """
        self.model.eval()
        seconds, rate = self.pase_config.seed_seconds, self.pase_config.sample_rate
        by_speaker = {}
        for utterance in self.index["utterances"]:
            if utterance["split"] == "test" and (utterance_ids is None or utterance["id"] in utterance_ids):
                by_speaker.setdefault(utterance["speaker"], []).append(utterance["id"])
        train_seeds = speaker_train_seeds(self.model, self.index, self.audio, sorted(by_speaker), seconds)
        test_seeds = {speaker: speaker_seed(self.model, [self.audio(i) for i in sorted(ids)], seconds, rate)
                      for speaker, ids in sorted(by_speaker.items())}
        speakers = sorted(s for s in test_seeds if s in train_seeds)
        matrix = np.array([[cosine_similarity(test_seeds[a], train_seeds[b]) for b in speakers]
                           for a in speakers])
        same = float(np.mean(np.diag(matrix))) if speakers else None
        other = float(np.mean(matrix[~np.eye(len(speakers), dtype=bool)])) if len(speakers) > 1 else None
        correct = int(np.sum(np.argmax(matrix, axis=1) == np.arange(len(speakers))))
        identification = held_out_identification(self.model, self.index, self.audio, train_seeds)
        total, count = self.validation_loss()
        metrics = {"epoch": epoch, "mean": {
            "validation_pase_loss": total / max(count, 1),
            "same_speaker_similarity": same, "other_speaker_similarity": other,
            "speaker_identification_accuracy": correct / max(len(speakers), 1),
            "utterance_identification_accuracy": identification["accuracy"],
            "utterance_own_speaker_similarity": identification["own_cosine"],
            "utterance_other_speaker_similarity": identification["other_cosine"]},
            "speakers": speakers, "utterance_identification": identification}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        png = save_images(out_dir / "speaker_similarity.png",
                          [("cosine similarity: test seed (row) vs train seed (column)", matrix)])
        atomic_write_json(out_dir / "metrics.json", metrics)
        if writer is not None:
            for key, value in metrics["mean"].items():
                if value is not None:
                    writer.add_scalar(f"test/{key}", value, epoch)
            writer.add_image("test/speaker_similarity", png_to_array(png), epoch, dataformats="HWC")
        return metrics


def speaker_train_seeds(model: PASE, index: dict, load_audio, speakers, seconds: float) -> dict:
    """speaker -> seed from its train split (utterances sorted by id): what `init` gives SampleRNN.

    `load_audio(utterance_id)` returns the utterance's audio at index["sample_rate"].
    """
    seeds = {}
    for speaker in speakers:
        ids = sorted(u["id"] for u in index["utterances"] if u["speaker"] == speaker and u["split"] == "train")
        if ids:
            seeds[speaker] = speaker_seed(model, [load_audio(i) for i in ids], seconds, index["sample_rate"])
    return seeds


def held_out_identification(model: PASE, index: dict, load_audio, seeds: dict) -> dict:
    """Nearest-seed speaker identification of every validation and test utterance, each
    embedded alone (accuracy, chance, own / other cosine: metrics/speaker.py)."""
    held_out = [u for u in index["utterances"]
                if u["split"] in ("validation", "test") and u["speaker"] in seeds]
    return speaker_identification(
        {speaker: [seed] for speaker, seed in seeds.items()},
        [(u["speaker"], embed(model, [load_audio(u["id"])], index["sample_rate"])) for u in held_out])


def load_pase(experiments_path: Path, name: str, epoch: int | None, device="cpu") -> PASE:
    """The PASE encoder of another experiment (the one a SampleRNN config names)."""
    experiment = Experiment(experiments_path, name)
    if not experiment.exists():
        raise UserError(f"model.pase_experiment: no such experiment {experiment.root}")
    config = experiment.config()
    if config["model"]["type"] != "pase":
        raise UserError(f"model.pase_experiment: {name} is a {config['model']['type']} experiment, "
                        "not pase")
    epoch = experiment.resolve_epoch(epoch)
    state = torch_load(experiment.checkpoint_path(epoch), map_location=device)
    model = PASE(PASEConfig.from_dict({k: v for k, v in config["model"].items() if k != "type"}))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def compute_speaker_seeds(config: dict, data_index: dict, normalization: dict, args, log) -> dict:
    """`init` of a SampleRNN experiment with PASE speakers: the seed of every speaker.

    A seed is the mean of PASE frames over the first `seed_seconds` of the
    speaker's training audio (utterances sorted by id), for modeling and
    adaptation speakers alike, so that unseen speakers can be rendered.
    """
    model_config = config["model"]
    model = load_pase(args.experiments_path, model_config["pase_experiment"],
                      model_config.get("pase_epoch"))
    store = UtteranceStore(data_index, normalization, args.data_path)
    seconds = model_config["pase_seed_seconds"]
    speakers = sorted(data_index["speakers"], key=lambda s: s["index"])   # rows = speaker indices
    by_speaker = speaker_train_seeds(model, data_index, lambda i: store.load(i).audio,
                                     [s["id"] for s in speakers], seconds)
    for speaker in speakers:
        if speaker["id"] not in by_speaker:
            raise UserError(f"speaker {speaker['id']}: no training audio to compute a PASE seed")
    seeds = [by_speaker[s["id"]] for s in speakers]
    log.info("PASE seeds of %d speakers from %s (%.1f s each)", len(seeds),
             model_config["pase_experiment"], seconds)
    return {"speaker_seeds.npz": {
        "speakers": np.array([s["id"] for s in speakers]),
        "seeds": np.stack(seeds).astype(np.float32),
        "seed_seconds": np.array(seconds, dtype=np.float32)}}

"""PASE in the shared loop, and the speaker seeds it gives to SampleRNN experiments.

Training: random chunks of `chunk_seconds` of every training utterance (all
speakers: no labels are used), the weighted worker losses as the loss; the
workers' targets (WORLD F0 and the rest) are computed by the loader, in the
read-ahead thread with `train --num-workers`, never in the training step. Test:
the held-out worker losses and how well seeds tell speakers apart (mean
cosine similarity of seeds of the same speaker vs. of different speakers),
with the similarity matrix as a PNG.
"""

import math
from pathlib import Path

import numpy as np
import torch

from ..audio.plots import png_to_array, save_images
from ..data.features import utterance_f0
from ..data.random_chunks import RandomChunkLoader
from ..data.stateful_loader import pad_frames
from ..data.store import UtteranceStore
from ..errors import UserError
from ..experiment.folder import atomic_write_json
from ..metrics.speaker import cosine_similarity, speaker_identification
from ..models.pase import PASE, PASEConfig, embed, speaker_seed, worker_targets
from .base import Runner, load_named_experiment


class ChunkTargets:
    """The workers' targets of a batch of random chunks, computed in the data pipeline.

    WORLD F0, the slow part, is computed once per utterance on the encoder's
    frame grid, with the corpus's F0 settings (`data_config`: the features' and
    the metrics' F0 analysis), and sliced for every chunk (chunk offsets are
    whole frames); the other targets come from the chunk itself
    (models/pase_targets.py).
    """

    def __init__(self, config: PASEConfig, audio_of, data_config: dict):
        self.config, self.audio_of, self.data_config = config, audio_of, data_config
        self.hop = math.prod(config.conv_strides)
        self._f0: dict[str, np.ndarray] = {}

    def f0(self, item) -> np.ndarray:
        if item not in self._f0:
            self._f0[item] = utterance_f0(self.audio_of(item), self.data_config, self.hop)[0]
        return self._f0[item]

    def __call__(self, chunks: list, wave: torch.Tensor) -> dict:
        frames = wave.shape[-1] // self.hop
        f0 = np.stack([pad_frames(self.f0(item)[offset // self.hop:offset // self.hop + frames], frames)
                       for item, offset in chunks])
        return {"targets": worker_targets(self.config, wave, f0)}


class PASERunner(Runner):
    loss_name = "pase_loss"

    def build_model(self):
        model_config = {k: v for k, v in self.config["model"].items() if k != "type"}
        self.pase_config = PASEConfig.from_dict(model_config)
        if self.pase_config.sample_rate != self.index["sample_rate"]:
            raise UserError(f"model.sample_rate: {self.pase_config.sample_rate} differs from the "
                            f"corpus rate data.sample_rate {self.index['sample_rate']}")
        self.targets = ChunkTargets(self.pase_config, self.audio, self.config["data"])
        hop = self.targets.hop
        self.chunk_samples = int(self.pase_config.chunk_seconds * self.pase_config.sample_rate) // hop * hop
        return PASE(self.pase_config)

    @property
    def store_cache_size(self) -> int:
        """Random chunks come from any utterance at any time: keep them all in memory."""
        return len(self.index["utterances"])

    def audio(self, utterance_id: str) -> np.ndarray:
        return self.store.load(utterance_id).audio

    def loader(self, split: str, epoch: int, shuffle: bool, whole: bool = False) -> RandomChunkLoader:
        """Random chunks of a split with their targets: this rank's shard, or the `whole` split."""
        utterances = [u for u in self.index["utterances"] if u["split"] == split]
        lengths = [u["num_frames"] * self.index["hop_length"] for u in utterances]
        rank, world_size = (0, 1) if whole else (self.context.rank, self.context.world_size)
        return RandomChunkLoader(self.audio, [u["id"] for u in utterances], lengths,
                                 self.config["training"]["batch_size"], self.chunk_samples,
                                 self.config["seed"], epoch, rank, world_size, shuffle=shuffle,
                                 offset_step=self.targets.hop, targets_of=self.targets)

    def train_batches(self, epoch, position):
        loader = self.loader("train", epoch, shuffle=True)
        if len(loader) == 0:
            raise UserError("training.batch_size: fewer training chunks than one batch")
        if position is not None:
            loader.load_state_dict(position)
        return loader

    def train_step(self, model, batch, optimizer="model"):
        losses = model(batch["chunk"].to(self.device),
                       {k: v.to(self.device) for k, v in batch["targets"].items()})
        scalars = {k: float(v.detach()) for k, v in losses.items() if k != "total"}
        return losses["total"], scalars

    @torch.no_grad()
    def validation_loss(self, whole: bool = False):
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False, whole=whole):
            wave = batch["chunk"].to(self.device)
            targets = {k: v.to(self.device) for k, v in batch["targets"].items()}
            total += float(self.model(wave, targets)["total"]) * len(wave)
            count += len(wave)
        return total, count

    # --- test: speaker seeds, shared out by speaker ----------------------------------

    def test_plan(self, utterance_ids, speaker_set):
        """One item per speaker with test utterances (seeds of test vs train audio), and the
        held-out worker losses over the whole validation split. Rank 0 adds the
        identification of every held-out utterance by its nearest train seed
        (metrics/speaker.py: speaker_identification)."""
        by_speaker = {}
        for utterance in self.index["utterances"]:
            if utterance["split"] == "test" and (utterance_ids is None or utterance["id"] in utterance_ids):
                by_speaker.setdefault(utterance["speaker"], []).append(utterance["id"])
        return [("validation", None)] + sorted(by_speaker.items())

    def render(self, epoch, items, speaker_set):
        seconds, rate = self.pase_config.seed_seconds, self.pase_config.sample_rate
        rendered = []
        for speaker, test_ids in items:
            if speaker == "validation":
                rendered.append({"validation": self.validation_loss(whole=True)})
                continue
            train_seed = speaker_train_seeds(self.model, self.index, self.audio, [speaker], seconds)
            rendered.append({
                "speaker": speaker,
                "test_seed": speaker_seed(self.model, [self.audio(i) for i in sorted(test_ids)], seconds, rate),
                "train_seed": train_seed[speaker]})
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        """Speaker discrimination of the seeds: same-speaker vs. other-speaker similarity."""
        total, count = rendered[0]["validation"]
        seeds = rendered[1:]
        speakers = [s["speaker"] for s in seeds]
        matrix = np.array([[cosine_similarity(a["test_seed"], b["train_seed"]) for b in seeds]
                           for a in seeds])
        same = float(np.mean(np.diag(matrix))) if speakers else None
        other = float(np.mean(matrix[~np.eye(len(speakers), dtype=bool)])) if len(speakers) > 1 else None
        correct = int(np.sum(np.argmax(matrix, axis=1) == np.arange(len(speakers)))) if speakers else 0
        self.model.eval()
        identification = held_out_identification(
            self.model, self.index, self.audio, {s["speaker"]: s["train_seed"] for s in seeds})
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
    config, _, state = load_named_experiment(experiments_path, name, epoch, "pase",
                                             "model.pase_experiment")
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

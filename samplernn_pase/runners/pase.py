"""PASE in the shared loop.

Training: random chunks of `chunk_seconds` of every training utterance (all
speakers: no labels are used), the weighted worker losses as the loss; the
workers' targets (WORLD F0 and the rest) are computed by the loader
(data/pase_chunks.py), in the read-ahead thread with `train --num-workers`,
never in the training step. The speaker seeds it gives SampleRNN experiments
are data/speaker_seeds.py's. Test:
the held-out worker losses and how well seeds tell speakers apart (mean
cosine similarity of seeds of the same speaker vs. of different speakers),
with the similarity matrix as a PNG.
"""

from pathlib import Path

import numpy as np
import torch

from ..audio.plots import png_to_array, save_images
from ..data.pase_chunks import ChunkTargets
from ..data.random_chunks import RandomChunkLoader
from ..data.speaker_seeds import speaker_train_seeds
from ..experiment.folder import atomic_write_json
from ..metrics.speaker import cosine_similarity, speaker_identification
from ..models.pase import PASE, PASEConfig, embed, speaker_seed
from .base import Runner
from .rendering import log_judges


class PASERunner(Runner):
    loss_name = "pase_loss"

    def build_model(self):
        self.pase_config = PASEConfig.from_dict(self.config["model"])
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
        """Random chunks of a split of the modeling speakers' utterances, with their targets: this
        rank's shard, or the `whole` split. The adaptation speakers' audio is never trained on:
        the encoder must make seeds of voices it has not heard (issue 24)."""
        utterances = [self.store.utterances[i] for i in self.utterance_ids(split)]
        lengths = [u["num_frames"] * self.index["hop_length"] for u in utterances]
        rank, world_size = (0, 1) if whole else (self.context.rank, self.context.world_size)
        return RandomChunkLoader(self.audio, [u["id"] for u in utterances], lengths,
                                 self.config["training"]["batch_size"], self.chunk_samples,
                                 self.config["seed"], epoch, rank, world_size, shuffle=shuffle,
                                 offset_step=self.targets.hop, targets_of=self.targets)

    def train_batches(self, epoch, position):
        return self.positioned(self.loader("train", epoch, shuffle=True), position,
                               empty="training.batch_size: fewer training chunks than one batch")

    def training_step(self, model, batch, optimize):
        losses = model(batch["chunk"].to(self.device),
                       {k: v.to(self.device) for k, v in batch["targets"].items()})
        if not optimize("model", losses["total"]):
            return {}
        return {self.loss_name: losses["total"].detach(),
                **{k: v.detach() for k, v in losses.items() if k != "total"}}

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
            log_judges(writer, metrics, "test", epoch)
            writer.add_image("test/speaker_similarity", png_to_array(png), epoch, dataformats="HWC")
        return metrics


def held_out_identification(model: PASE, index: dict, load_audio, seeds: dict) -> dict:
    """Nearest-seed speaker identification of every validation and test utterance, each
    embedded alone (accuracy, chance, own / other cosine: metrics/speaker.py)."""
    held_out = [u for u in index["utterances"]
                if u["split"] in ("validation", "test") and u["speaker"] in seeds]
    return speaker_identification(
        {speaker: [seed] for speaker, seed in seeds.items()},
        [(u["speaker"], embed(model, [load_audio(u["id"])], index["sample_rate"])) for u in held_out])

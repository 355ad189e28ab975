"""MelNet in the shared loop: log-mel chunks through the same stateful loader.

The chunks are standardized log-mel frames (data/mel_source.py, with the
statistics `init` wrote into normalization.npz). Long spectrograms are cut into chunks of
`model.chunk_frames` frames; the time-direction recurrent states of every
trained tier are carried from one chunk to the next (detached) and saved in
checkpoints. Test rendering: full multiscale samples, and "upsampling only"
from the real low-resolution spectrogram of test utterances, to audio by the
HiFi-GAN of `model.vocoder_experiment` (runners/vocoding.py; a `vocoder` row:
it on the real mel) or else Griffin-Lim (the `griffin_lim` row either way),
with a PNG per tier.
"""

from functools import cached_property

import numpy as np
import torch

from ..audio.mel import griffin_lim
from ..data.mel_source import MelSource, mel_normalization
from ..errors import UserError
from ..models.melnet import MelNet, MelNetConfig
from ..training.rng import stream_seed
from .base import Runner
from .carried import CarriedState
from .vocoding import named_vocoder
from .rendering import RenderedItem, max_test_frames, test_tag, utterances_to_render, write_results


class MelNetRunner(Runner):
    loss_name = "nll"
    find_unused_parameters = True   # `--tier K` trains one tier; the others get no gradient

    def __init__(self, context):
        self.state = CarriedState()   # per trained tier, its time-direction states, chunk to chunk
        self.model_config = MelNetConfig.from_dict(context.config["model"])
        self.train_tiers = list(range(1, self.model_config.tiers + 1))
        super().__init__(context)
        self.source = self.mel_source()
        if self.config["training"]["tier"] is not None:
            self.select_tier(self.config["training"]["tier"])

    def build_model(self):
        return MelNet(self.model_config)

    def mel_source(self) -> MelSource:
        """Standardized log-mel chunks, with the statistics `init` wrote."""
        normalization = self.context.experiment.normalization()
        if "mel_mean" not in normalization:
            raise UserError(f"{self.context.experiment.normalization_path}: no mel_mean / mel_std "
                            "(the experiment was made by an older version: run `init` again)")
        return MelSource(self.store, self.index, self.model_config, normalization["mel_mean"],
                         normalization["mel_std"])

    @staticmethod
    def prepare_experiment(config, data_index, normalization, experiments_path, data_path, log):
        """`init`: the log-mel statistics, added to normalization.npz (data/mel_source.py)."""
        model_config = MelNetConfig.from_dict(config["model"])
        return {"normalization.npz": mel_normalization(model_config, data_index, normalization,
                                                       data_path, log)}

    def select_tier(self, tier: int) -> None:
        """Train only this tier (`train --tier K`); every tier stays in the checkpoints."""
        if not 1 <= tier <= self.model_config.tiers:
            raise UserError(f"--tier {tier}: the model has tiers 1..{self.model_config.tiers}")
        self.train_tiers = [tier]
        self.state.clear()

    def loader(self, split, epoch, shuffle):
        return self.stateful_loader(self.source, self.model_config.chunk_frames, split, epoch,
                                    shuffle)

    def train_batches(self, epoch, position):
        if position is None:
            self.state.clear()
        return self.positioned(self.loader("train", epoch, shuffle=True), position)

    def frame_mask(self, batch) -> torch.Tensor:
        """(B, T): real frames of filled slots (an utterance's last chunk is padded)."""
        return (batch["frame_mask"] & batch["mask"][:, None]).to(self.device)

    def training_step(self, model, batch, optimize):
        mel = batch["mel"].to(self.device)
        reset, mask = batch["reset"].to(self.device), self.frame_mask(batch)
        loss, state, stats = model(mel, self.state.value, reset, mask, tiers=self.train_tiers)
        self.state.keep(state)
        if not optimize("model", loss):
            return {}
        return {self.loss_name: loss.detach(), **stats}      # stats: detached per-tier NLLs

    def on_skipped_step(self):
        self.state.clear()

    def state_dict(self):
        return {"state": self.state.state_dict(), "train_tiers": self.train_tiers}

    def load_state_dict(self, state):
        if state.get("train_tiers") == self.train_tiers and state.get("state") is not None:
            self.state.load({int(k): s for k, s in state["state"].items()}, self.device)
        else:   # another tier selection: its carried states do not apply
            self.state.clear()

    @torch.no_grad()
    def validation_loss(self):
        self.model.eval()
        state, total, count = None, 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False):
            mel = batch["mel"].to(self.device)
            mask = self.frame_mask(batch)
            loss, state, _ = self.model(mel, state, batch["reset"].to(self.device), mask,
                                        tiers=self.train_tiers)
            frames = int(mask.sum())
            total += float(loss) * frames
            count += frames
        return total, count

    # --- test rendering -------------------------------------------------------------

    @cached_property
    def vocoder(self):
        """The HiFi-GAN of model.vocoder_experiment (runners/vocoding.py), or None: Griffin-Lim."""
        return named_vocoder(self.config["model"], self.context.experiment.root.parent, self.device,
                             self.log, self.context.from_release)

    def to_audio(self, mel_normalized: torch.Tensor, vocoder: bool = True) -> np.ndarray:
        """Audio of a standardized mel (frames, n_mels): by the named vocoder (when there is one
        and `vocoder`), else by Griffin-Lim."""
        c = self.model_config
        log_mel = (mel_normalized * self.source.std + self.source.mean).T
        if vocoder and self.vocoder is not None:
            return self.vocoder(log_mel)
        audio = griffin_lim(log_mel.cpu(), self.index["sample_rate"], c.n_fft, c.hop_length,
                            c.win_length, c.fmin, c.fmax).numpy()
        # Griffin-Lim does not bound the amplitude: scale a loud result down rather than
        # let the wav writer clip it.
        peak = float(np.abs(audio).max(initial=0.0))
        return audio * (0.95 / peak) if peak > 0.95 else audio

    @staticmethod
    def tier_panels(stages: dict, reference: np.ndarray | None) -> list:
        """PNG panels: the spectrogram after every tier (and the real one)."""
        panels = [(f"after tier {k}", stage.cpu().numpy().T) for k, stage in sorted(stages.items())]
        if reference is not None:
            panels.append(("reference", reference.T))
        return panels

    def test_plan(self, utterance_ids, speaker_set):
        """Upsampling of each test utterance, then as many unconditional samples."""
        utterance_ids = utterances_to_render(self.index, self.config["test"], speaker_set, utterance_ids)
        return ([("upsampled", utterance_id, k) for k, utterance_id in enumerate(utterance_ids)]
                + [("sample", f"sample-{k}", len(utterance_ids) + k)
                   for k in range(len(utterance_ids))])

    def test_frames(self, frames: int | None) -> int:
        """Frames to render: the cap of test.max_seconds, a whole number of tier-1 frames."""
        cap = max_test_frames(self.config["test"], self.index["sample_rate"], self.model_config.hop_length)
        if cap is not None:
            frames = cap if frames is None else min(frames, cap)
        frames = self.model.time_factor * 16 if frames is None else frames
        return frames - frames % self.model.time_factor

    def render(self, epoch, items, speaker_set):
        temperature = self.config["test"]["temperature"]
        rendered = []
        for kind, name, number in items:
            # Each item has its own noise: what it renders does not depend on the number of ranks.
            generator = torch.Generator(device=self.device).manual_seed(
                stream_seed(self.rendering_seed, epoch, number))
            if kind == "sample":
                samples, stages = self.model.sample(1, self.test_frames(None), temperature,
                                                    generator, return_tiers=True)
                rendered.append(RenderedItem(name, self.to_audio(samples[0]), images=self.tier_panels(
                    {k: v[0] for k, v in stages.items()}, None)))
                continue
            real = self.source.normalized(name)
            frames = self.test_frames(len(real))
            if frames == 0:
                rendered.append(None)
                continue
            real = torch.from_numpy(real[:frames]).to(self.device)[None]
            # Upsampling only: tiers 2..G from the real tier-1 spectrogram (the seed's experiment).
            if self.model_config.tiers > 1:
                lower = self.model.low_resolution(real, 2)
                upsampled, stages = self.model.upsample(lower, 2, frames, temperature, generator,
                                                        return_tiers=True)
            else:
                upsampled, stages = real, {1: real[0]}
            stages = {k: v[0] for k, v in stages.items()}
            nll, _, per_tier = self.model(real, None, None, None)
            # The training loss: the sum of the tiers' NLLs (each listed too).
            metrics = {"nll": float(nll), **{k: float(v) for k, v in per_tier.items()},
                       "upsampling_l1": float((upsampled - real).abs().mean())}
            reference_audio = self.to_audio(real[0], vocoder=False)
            recording = self.store.load(name).audio[:frames * self.model_config.hop_length]
            # The real recording, Griffin-Lim from its real mel, and the named vocoder on it (the
            # ceiling of a mel model with that vocoder).
            references = {"real": recording, "griffin_lim": reference_audio}
            if self.vocoder is not None:
                references["vocoder"] = self.to_audio(real[0])
            rendered.append(RenderedItem(
                name + ".upsampled", self.to_audio(upsampled[0]), reference_audio, metrics,
                images=self.tier_panels(stages, real[0].cpu().numpy()), utterance=name, words_of=name,
                references=references))
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        # Fréchet distances: the unconditional samples against the real test set.
        return write_results(out_dir, epoch, self.index["sample_rate"], rendered, writer,
                             test_tag(speaker_set), self.evaluation, speaker_set,
                             self.test_frames(None) * self.model_config.hop_length,
                             frechet_items={item.id for item in rendered if item.id.startswith("sample-")})

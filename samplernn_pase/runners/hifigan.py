"""HiFi-GAN in the shared loop: discriminators then generator, two optimizers.

Data: random segments of `model.segment_frames * hop_length` samples of the
training utterances of every speaker (a vocoder knows no speaker: the more
voices, the better), new offsets every epoch (data/random_chunks.py, resumable),
each with its log-mel computed by audio/mel.py in the loader (in the read-ahead
thread with `train --num-workers`).

Steps (`training_step`, hifi-gan's train.py order): the generator renders the
batch's mels; the discriminators (MPD + MSD) step on the LSGAN loss of real
audio against that (detached) audio; then the generator steps on adversarial
+ 2 x feature matching + 45 x mel L1 through the discriminators just updated.
The run's training loss is the first optimizer's, the discriminators'.
AdamW (0.8, 0.99) and the exponential decay come from the `training` section
(configs/hifigan.json).

Validation loss: the mel L1 of the generator's audio on fixed validation
segments (the paper's validation figure). Test: copy-synthesis of the test
utterances (the real recording -> its log-mel -> the generator), beside the
real recording and Griffin-Lim of the same mel (the baseline row), judged like
every family (DNSMOS, WER, speaker similarity) plus MCD, F0 RMSE, V/UV error
and the multi-resolution STFT distance against the recording, for the
vocoder and for Griffin-Lim alike.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..audio.mel import griffin_lim
from ..data.random_chunks import RandomChunkLoader
from ..metrics.speech import multi_resolution_stft_distance, speech_metrics
from ..models.hifigan import Generator, HiFiGAN, HiFiGANConfig
from ..training.optim import build_optimizer
from .base import Runner
from .rendering import RenderedItem, max_test_frames, test_tag, utterances_to_render, write_results


def copy_synthesis_metrics(audio: np.ndarray, recording: np.ndarray, log_mel: np.ndarray,
                           config: HiFiGANConfig, params: dict) -> dict:
    """How close audio rendered from the recording's own mel is to the recording: MCD, F0 RMSE,
    V/UV error (metrics/speech.py, the features' analysis), multi-resolution STFT distance,
    and the L1 between the audio's log-mel and the mel it was rendered from."""
    audio_mel = config.log_mel(torch.from_numpy(np.asarray(audio, np.float32))).numpy()
    frames = min(audio_mel.shape[1], log_mel.shape[1])
    return {**speech_metrics(audio, recording, params),
            "mrstft_distance": multi_resolution_stft_distance(audio, recording),
            "mel_l1": float(np.abs(audio_mel[:, :frames] - log_mel[:, :frames]).mean())}


class HiFiGANRunner(Runner):
    loss_name = "discriminator_loss"
    validation_loss_name = "mel_l1"
    find_unused_parameters = True     # each player's step leaves the other's parameters out

    def build_model(self):
        self.model_config = HiFiGANConfig.from_dict(self.config["model"], sample_rate=self.index["sample_rate"])
        return HiFiGAN(self.model_config)

    @property
    def store_cache_size(self) -> int:
        """Random segments come from any utterance at any time: keep them all in memory."""
        return len(self.index["utterances"])

    def utterance_ids(self, split: str) -> list[str]:
        """Every speaker's utterances of the split: a vocoder is not conditioned on the speaker."""
        return self.store.ids(split=split)

    def optimizers(self, training):
        return {"discriminator": build_optimizer(self.model.discriminator_parameters(), training),
                "generator": build_optimizer(self.model.generator.parameters(), training)}

    # --- batches --------------------------------------------------------------------

    def audio(self, utterance_id: str) -> np.ndarray:
        return self.store.load(utterance_id).audio

    def segment_mels(self, chunks, audio: torch.Tensor) -> dict:
        """The loader's `targets_of`: the log-mel (B, n_mels, segment_frames) of each segment."""
        return {"mel": self.model_config.log_mel(audio)}

    def loader(self, split: str, epoch: int, shuffle: bool) -> RandomChunkLoader:
        ids = self.utterance_ids(split)
        lengths = [len(self.audio(i)) for i in ids]
        return RandomChunkLoader(self.audio, ids, lengths, self.config["training"]["batch_size"],
                                 self.model_config.segment_frames * self.model_config.hop_length,
                                 self.config["seed"], epoch, self.context.rank, self.context.world_size,
                                 shuffle=shuffle, targets_of=self.segment_mels)

    def train_batches(self, epoch, position):
        return self.positioned(self.loader("train", epoch, shuffle=True), position,
                               empty="training.batch_size: fewer training segments than one batch "
                                     "(lower training.batch_size or model.segment_frames)")

    def training_step(self, model, batch, optimize):
        audio = batch["chunk"].to(self.device).unsqueeze(1)      # (B, 1, samples)
        mel = batch["mel"].to(self.device)                       # (B, n_mels, frames)
        generated = model(mel)
        logged = {}
        # Discriminators: LSGAN, real audio against the generator's (detached).
        loss = model.discriminator_loss(audio, generated)
        if optimize("discriminator", loss):
            logged[self.loss_name] = loss.detach()
        # Generator: adversarial + 2 x feature matching + 45 x mel L1, through the updated
        # discriminators.
        loss, terms = model.generator_loss(audio, mel, generated)
        if optimize("generator", loss):
            logged.update(terms)
        return logged

    @torch.no_grad()
    def validation_loss(self):
        """(sum of mel L1, segments) of the generator on fixed validation segments."""
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False):
            mel = batch["mel"].to(self.device)
            generated = self.model(mel).squeeze(1)
            total += float(F.l1_loss(self.model_config.log_mel(generated), mel)) * len(mel)
            count += len(mel)
        return total, count

    # --- test: copy-synthesis ---------------------------------------------------------

    def test_plan(self, utterance_ids, speaker_set):
        return utterances_to_render(self.index, self.config["test"], speaker_set, utterance_ids)

    def inference_generator(self) -> Generator:
        """The generator with weight norm folded in: a new one with the trained weights, since
        training goes on with the original (a deep copy would share the parametrized class
        whose `weight` property folding removes)."""
        generator = Generator(self.model_config).to(self.device)
        generator.load_state_dict(self.model.generator.state_dict())
        return generator.remove_weight_norm().eval()

    def render(self, epoch, items, speaker_set):
        c = self.model_config
        generator = self.inference_generator()
        max_frames = max_test_frames(self.config["test"], c.sample_rate, c.hop_length)
        params = self.evaluation.params
        rendered = []
        for utterance_id in items:
            recording = np.array(self.audio(utterance_id), np.float32)
            frames = len(recording) // c.hop_length if max_frames is None else \
                min(len(recording) // c.hop_length, max_frames)
            recording = recording[:frames * c.hop_length]
            log_mel = c.log_mel(torch.from_numpy(recording))                  # (n_mels, frames)
            audio = generator(log_mel[None].to(self.device))[0, 0].float().cpu().numpy()
            baseline = griffin_lim(log_mel, c.sample_rate, c.n_fft, c.hop_length, c.win_length,
                                   c.fmin, c.fmax).numpy()
            log_mel = log_mel.numpy()
            rendered.append(RenderedItem(
                utterance_id, audio, recording, copy_synthesis_metrics(audio, recording, log_mel, c, params),
                images=[("HiFi-GAN (log-mel)", c.log_mel(torch.from_numpy(audio)).numpy()),
                        ("Griffin-Lim (log-mel)", c.log_mel(torch.from_numpy(baseline)).numpy()),
                        ("real (log-mel)", log_mel)],
                utterance=utterance_id, words_of=utterance_id,
                references={"real": recording, "griffin_lim": baseline},
                reference_metrics={"griffin_lim": copy_synthesis_metrics(baseline, recording, log_mel,
                                                                         c, params)}))
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        return write_results(out_dir, epoch, self.index["sample_rate"], rendered, writer,
                             test_tag(speaker_set), self.evaluation, speaker_set)

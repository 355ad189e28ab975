"""Mel VQ-VAE in the shared loop: two optimizers, "autoencoder" then "discriminator".

`init` stores the scaled log-mels of the corpus (data/mel_crops.py, `mels.npz`).
Training: random crops (n_mels x crop_frames) of the modeling speakers'
training utterances, new offsets every epoch. Each batch steps the
autoencoder, then, from batch `disc_start` on, the discriminator on the same
batch's (detached) reconstruction; the batch counter is runner state, so a
resumed run switches the GAN on at the same batch. Validation loss: the
autoencoder loss without its GAN term (L1 + codebook_weight * quantizer loss)
on fixed validation crops. Test: reconstructions of whole
test utterances (mel image beside the original; audio by the HiFi-GAN of
`model.vocoder_experiment`, runners/vocoding.py, else Griffin-Lim; rows
`griffin_lim` and, with a vocoder, `vocoder` of the original mel) and
metrics: mel L1, spectral convergence, codebook usage; `baseline_*`: the
same figures for the trivial reconstruction (the training split's mean
spectrum in every frame), which a useful model must beat.
"""

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from ..data.mel_crops import MelCrops, prepare_mels
from ..errors import UserError
from ..models.vqvae import MelVQVAE, VQVAEConfig
from ..training.optim import build_optimizer
from .base import Runner
from .vocoding import named_vocoder
from .rendering import RenderedItem, max_test_frames, test_tag, utterances_to_render, write_results


def spectral_convergence(reconstruction: np.ndarray, reference: np.ndarray) -> float:
    """||S - S'||_F / ||S||_F of two magnitude spectrograms (here linear mel magnitudes)."""
    return float(np.linalg.norm(reference - reconstruction) / max(np.linalg.norm(reference), 1e-12))


def code_perplexity(codes: np.ndarray, codebook_size: int) -> float:
    """exp(entropy) of the code histogram: the number of equally used codes it amounts to."""
    counts = np.bincount(np.asarray(codes).reshape(-1), minlength=codebook_size).astype(np.float64)
    probabilities = counts[counts > 0] / counts.sum()
    return float(np.exp(-np.sum(probabilities * np.log(probabilities))))


class VQVAERunner(Runner):
    loss_name = "autoencoder_loss"
    find_unused_parameters = True     # the discriminator gets no gradient before disc_start

    @staticmethod
    def prepare_experiment(config, data_index, normalization, experiments_path, data_path, log):
        """`init`: the scaled log-mel of every utterance (mels.npz)."""
        return prepare_mels(config, data_index, normalization, data_path, log)

    def build_model(self):
        self.model_config = VQVAEConfig.from_dict(self.config["model"])
        self.mels = MelCrops.of_experiment(self.context.experiment.root)
        self.batches_seen = 0         # autoencoder batches, all epochs: the GAN starts at disc_start
        return MelVQVAE(self.model_config)

    def optimizers(self, training):
        return {"autoencoder": build_optimizer(self.model.autoencoder_parameters(), training),
                "discriminator": build_optimizer(self.model.discriminator_parameters(), training)}

    def loader(self, split: str, epoch: int, shuffle: bool, batch_size: int | None = None):
        return self.mels.loader(self.utterance_ids(split), batch_size or self.config["training"]["batch_size"],
                                self.model_config.crop_frames, self.config["seed"], epoch,
                                self.context.rank, self.context.world_size, shuffle=shuffle)

    def train_batches(self, epoch, position):
        loader = self.loader("train", epoch, shuffle=True)
        if len(loader) == 0:
            raise UserError("training.batch_size: fewer training crops than one batch (lower "
                            "training.batch_size or model.crop_frames)")
        if position is not None:
            loader.load_state_dict(position)
        return loader

    def gan_active(self) -> bool:
        """True from the `disc_start`-th batch on (counted from 0)."""
        return self.batches_seen > self.model_config.disc_start

    def training_step(self, model, batch, optimize):
        mel = batch["chunk"].to(self.device)
        self.batches_seen += 1
        use_gan = self.gan_active()
        logged = {}
        # Autoencoder: L1 + codebook loss (+ the adaptively weighted GAN term once it is on).
        loss, scalars, reconstruction = model.autoencoder_loss(mel, use_gan=use_gan)
        if optimize("autoencoder", loss):
            logged.update({self.loss_name: loss.detach(), **scalars})
        # Discriminator, from batch disc_start on: hinge loss, real mel against the
        # reconstruction the autoencoder made before its step (detached).
        if use_gan:
            loss, scalars = model.discriminator_loss(mel, reconstruction.detach())
            if optimize("discriminator", loss):
                logged.update(scalars)
        return logged

    def state_dict(self):
        return {"batches_seen": self.batches_seen}

    def load_state_dict(self, state):
        self.batches_seen = int(state.get("batches_seen", 0))

    @torch.no_grad()
    def validation_loss(self):
        self.model.eval()
        crops = sum(self.mels.num_frames(i) // self.model_config.crop_frames
                    for i in self.utterance_ids("validation"))
        batch_size = max(1, min(self.config["training"]["batch_size"], crops // self.context.world_size))
        total, count = 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False, batch_size=batch_size):
            mel = batch["chunk"].to(self.device)
            reconstruction, quantizer_loss, _ = self.model.autoencode(mel)
            loss = (reconstruction - mel).abs().mean() + self.model_config.codebook_weight * quantizer_loss
            total += float(loss) * len(mel)
            count += len(mel)
        return total, count

    # --- test rendering -------------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reconstruction (n_mels, frames), codes (H, W)) of a whole scaled mel; the end is
        padded with silence (-1) to a multiple of the time downsampling."""
        frames = scaled.shape[1]
        factor = self.model_config.downsample_time
        mel = torch.from_numpy(scaled).to(self.device)[None]
        mel = F.pad(mel, (0, (-frames) % factor), value=-1.0)
        reconstruction, _, codes = self.model.autoencode(mel)
        return reconstruction[0, :, :frames].float().cpu().numpy(), codes[0].cpu().numpy()

    def test_plan(self, utterance_ids, speaker_set):
        return utterances_to_render(self.index, self.config["test"], speaker_set, utterance_ids)

    def render(self, epoch, items, speaker_set):
        """Reconstructions of test utterances, beside the original mel through the same
        Griffin-Lim (the vocoder's ceiling) and the real recording."""
        settings = self.mels.settings
        max_frames = max_test_frames(self.config["test"], settings.sample_rate, settings.hop_length)
        max_frames = None if max_frames is None else max(1, max_frames)
        rendered = []
        for utterance_id in items:
            original = self.mels.mel(utterance_id)[:, :max_frames]
            reconstruction, codes = self.reconstruct(original)
            log_original, log_reconstruction = (self.mels.to_log_mel(original),
                                                self.mels.to_log_mel(reconstruction))
            log_baseline = np.broadcast_to(self.mels.to_log_mel(self.mean_spectrum)[:, None], original.shape)
            metrics = {
                "mel_l1": float(np.abs(log_reconstruction - log_original).mean()),
                "spectral_convergence": spectral_convergence(np.exp(log_reconstruction), np.exp(log_original)),
                "baseline_mel_l1": float(np.abs(log_baseline - log_original).mean()),
                "baseline_spectral_convergence": spectral_convergence(np.exp(log_baseline), np.exp(log_original)),
                "codes_used": int(len(np.unique(codes))),
                "code_perplexity": code_perplexity(codes, self.model_config.codebook_size),
                "seconds": original.shape[1] * settings.hop_length / settings.sample_rate}
            audio = self.to_audio(reconstruction)
            recording = np.array(self.store.load(utterance_id).audio[:len(audio)])
            references = {"real": recording, "griffin_lim": self.mels.to_audio(torch.from_numpy(original))}
            if self.vocoder is not None:      # the vocoder on the original mel: this pipeline's ceiling
                references["vocoder"] = self.to_audio(original)
            rendered.append(RenderedItem(
                utterance_id, audio, recording, metrics,
                images=[("reconstruction (log-mel)", log_reconstruction), ("original (log-mel)", log_original)],
                utterance=utterance_id, words_of=utterance_id, references=references,
                extra={"codes": codes.reshape(-1)}))
        return rendered

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        codes = np.concatenate([item.extra["codes"] for item in rendered])
        summary = {"codebook_codes_used": int(len(np.unique(codes))),
                   "codebook_perplexity": code_perplexity(codes, self.model_config.codebook_size),
                   "codebook_size": self.model_config.codebook_size}
        return write_results(out_dir, epoch, self.mels.settings.sample_rate, rendered, writer,
                             test_tag(speaker_set), self.evaluation, speaker_set, extra=summary)

    @cached_property
    def vocoder(self):
        """The HiFi-GAN of model.vocoder_experiment (runners/vocoding.py), or None: Griffin-Lim."""
        return named_vocoder(self.config["model"], self.context.experiment.root.parent, self.device,
                             self.log, self.context.from_release)

    def to_audio(self, scaled: np.ndarray) -> np.ndarray:
        """Audio of a scaled mel (n_mels, frames): by the named vocoder, else Griffin-Lim."""
        if self.vocoder is None:
            return self.mels.to_audio(torch.from_numpy(scaled))
        return self.vocoder(self.mels.to_log_mel(torch.from_numpy(scaled)))

    @cached_property
    def mean_spectrum(self) -> np.ndarray:
        """Mean scaled mel of every band over the training crops' utterances: the trivial
        "reconstruction" (one spectrum for every frame) the metrics are compared with."""
        ids = self.utterance_ids("train")
        total = sum(self.mels.mel(i).sum(1) for i in ids)
        return (total / sum(self.mels.num_frames(i) for i in ids)).astype(np.float32)

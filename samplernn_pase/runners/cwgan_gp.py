"""Conditional WGAN-GP in the shared loop: generator and critic as two optimizers.

Data: `init` stores the experiment's scaled log-mels (data/mel_crops.py,
mels.npz); training reads random crops of `model.frames` frames of the
modeling speakers' training utterances, each with the labels of its speaker
(speaker index, gender) from data.json.

Steps (`training_step`). The critic steps on every batch, then the generator
on every n_critic-th
(the count is in the checkpoints, so a resumed run keeps the rhythm). The
run's training loss is the first optimizer's, the critic loss
-(E critic(real) - E critic(fake)) + lambda * penalty.

Validation. A GAN has no held-out likelihood; `validation_loss` is the same
critic loss without the penalty on the validation crops, i.e. minus the
critic's Wasserstein estimate between validation mels and generated mels
(fixed noise). A training critic loss far below it means the critic
overfits the training crops (Gulrajani et al. 2017, section 5.3). It is not a
ranking of the generator's quality: the configs turn the plateau scheduler and
early stopping off, and checkpoints/index.json's "best" epoch is only the
epoch whose critic separated validation mels best.

Test: for every label (each modeling speaker, with its gender), the same
`samples_per_label` noise vectors through the generator; wav by Griffin-Lim
after undoing the scaling, grid.png (one row per label, a real test crop
first, on one colour scale), and metrics.json with per-sample spectral-profile
distances to the own label's and the other labels' real test mels, and the
critic's Wasserstein estimate on the test crops; the project's evaluation
(speaker similarity of each sample to its label's speaker, DNSMOS, Fréchet
distances of the generated audio to the real test set with their floor) and
a Fréchet distance on the scaled log-mel frames themselves.
"""

import numpy as np
import torch

from ..audio.plots import png_to_array, save_image_grid
from ..data.labeled_crops import LabeledCrops, SpeakerLabels
from ..data.mel_crops import MelCrops, prepare_mels
from ..errors import UserError
from ..metrics.frechet import mel_frechet
from ..models.cwgan_gp import CWGANGP, CWGANGPConfig
from ..training.optim import build_optimizer
from .base import Runner
from .rendering import RenderedItem, write_results


class CWGANGPRunner(Runner):
    loss_name = "critic_loss"

    @staticmethod
    def prepare_experiment(config, data_index, normalization, experiments_path, data_path, log):
        """`init`: the labels must exist in the corpus; the scaled log-mels go into mels.npz."""
        labels = SpeakerLabels(data_index, config["model"]["labels"])
        log.info("cwgan_gp labels: %s (classes %s)", labels.kinds, list(labels.sizes))
        return prepare_mels(config, data_index, normalization, data_path, log)

    def build_model(self):
        model = self.config["model"]
        self.crops = MelCrops.of_experiment(self.context.experiment.root)
        self.labels = SpeakerLabels(self.index, model["labels"])
        self.model_config = CWGANGPConfig.from_dict(model, n_mels=self.crops.n_mels,
                                                    label_sizes=self.labels.sizes)
        self.critic_steps = 0      # critic steps taken: the generator steps every n_critic-th
        return CWGANGP(self.model_config)

    def speaker_tables(self):
        if "speaker" not in self.labels.kinds:
            return {}
        column = self.labels.kinds.index("speaker")
        return {f"{part}.label_embeddings.{column}.weight": (0, 1) for part in ("generator", "critic")}

    def optimizers(self, training):
        return {"critic": build_optimizer(self.model.critic.parameters(), training),
                "generator": build_optimizer(self.model.generator.parameters(), training)}

    # --- batches --------------------------------------------------------------------

    def crop_loader(self, split: str, epoch: int, shuffle: bool, batch_size: int | None = None):
        loader = self.crops.loader(self.utterance_ids(split), batch_size or self.config["training"]["batch_size"],
                                   self.model_config.frames, self.config["seed"], epoch,
                                   self.context.rank, self.context.world_size, shuffle=shuffle)
        return LabeledCrops(loader, self.labels.of_utterance)

    def train_batches(self, epoch, position):
        batches = self.crop_loader("train", epoch, shuffle=True)
        if len(batches) == 0:
            raise UserError(f"training.batch_size: fewer training crops of model.frames = "
                            f"{self.model_config.frames} frames than one batch")
        if position is not None:
            batches.load_state_dict(position)
        return batches

    def noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(batch_size, self.model_config.noise_size, device=self.device,
                           generator=generator)

    def training_step(self, model, batch, optimize):
        labels = batch["labels"].to(self.device)
        logged = {}
        # Critic: -(E critic(real) - E critic(G(z))) + lambda * gradient penalty; the fakes
        # are made without a graph, so this step does not reach the generator.
        self.critic_steps += 1
        loss, scalars = model.critic_loss(batch["mel"].to(self.device), labels, self.noise(len(labels)))
        if optimize("critic", loss):
            logged.update({self.loss_name: loss.detach(), **scalars})
        # Generator, on every n_critic-th critic step: -E critic(G(z)).
        if self.critic_steps % self.model_config.n_critic == 0:
            optimize("generator", model.generator_loss(labels, self.noise(len(labels))))
        return logged

    def state_dict(self):
        return {"critic_steps": self.critic_steps}

    def load_state_dict(self, state):
        self.critic_steps = int(state.get("critic_steps", 0))

    def fixed_crops(self, split: str):
        """The split's crops in a fixed order, in batches of at most training.batch_size
        (smaller when the split has fewer crops)."""
        frames = self.model_config.frames
        ids = self.utterance_ids(split)
        crops = sum(self.crops.num_frames(i) // frames for i in ids) // self.context.world_size
        batch_size = max(1, min(self.config["training"]["batch_size"], crops))
        return self.crop_loader(split, 0, shuffle=False, batch_size=batch_size)

    def wasserstein_estimate(self, split: str) -> tuple[float, int]:
        """(sum over crops of the critic's Wasserstein estimate, crops), fixed noise."""
        noise_generator = torch.Generator(device=self.device).manual_seed(self.config["seed"])
        total, count = 0.0, 0
        for batch in self.fixed_crops(split):
            labels = batch["labels"].to(self.device)
            estimate = self.model.wasserstein_estimate(batch["mel"].to(self.device), labels,
                                                       self.noise(len(labels), noise_generator))
            total += float(estimate) * len(labels)
            count += len(labels)
        return total, count

    def validation_loss(self):
        """Minus the critic's Wasserstein estimate on the validation crops (see the module
        docstring): the critic loss without its penalty."""
        self.model.eval()
        total, count = self.wasserstein_estimate("validation")
        return -total, count

    # --- test rendering ---------------------------------------------------------------

    def label_rows(self, speaker_set: str) -> dict[tuple, list[str]]:
        """Distinct label rows of the speaker set -> their speakers."""
        rows = {}
        for speaker in self.index["speakers"]:
            if speaker["set"] == speaker_set:
                rows.setdefault(self.labels.speaker_rows[speaker["id"]], []).append(speaker["id"])
        return rows

    def real_test_mels(self, speakers: list[str]) -> list[np.ndarray]:
        """Scaled log-mels (n_mels, frames) of the test utterances of these speakers."""
        ids = [u["id"] for u in self.index["utterances"]
               if u["split"] == "test" and u["speaker"] in speakers]
        return [self.crops.mel(i) for i in ids]

    def test_plan(self, utterance_ids, speaker_set):
        """One item: every label's samples come from one batched generator pass (seconds
        at most), so rank 0 renders them all."""
        if speaker_set != "modeling":
            raise UserError("test --speakers: a cwgan_gp generator knows only the labels it "
                            "trained on (the modeling speakers)")
        if utterance_ids is not None:
            raise UserError("test_sample: a cwgan_gp generator renders labels, not utterances; "
                            "use `test`")
        return ["labels"]

    @torch.no_grad()
    def render(self, epoch, items, speaker_set):
        if not items:
            return []
        count, frames = self.config["model"]["samples_per_label"], self.model_config.frames
        noise_generator = torch.Generator(device=self.device).manual_seed(self.rendering_seed)
        noise = self.noise(count, noise_generator)         # the same noise for every label
        speaker_ids = [s["id"] for s in sorted(self.index["speakers"], key=lambda s: s["index"])]
        rows = self.label_rows(speaker_set)
        real_by_row = {row: self.real_test_mels(speakers) for row, speakers in rows.items()}
        profiles = {row: np.concatenate(real, axis=1).mean(1) if real else None   # mean mel per band
                    for row, real in real_by_row.items()}
        names, mels, grid, real_mels = [], [], [], []
        for row, speakers in rows.items():
            name = self.labels.name(row, speaker_ids)
            labels = torch.tensor([row] * count, dtype=torch.long, device=self.device)
            generated = self.model.generator(noise, labels)[:, 0].float().cpu()
            real = real_by_row[row]
            real_mels += real
            long_enough = [m for m in real if m.shape[1] >= frames]
            panels = [("real", long_enough[0][:, :frames])] if long_enough else []
            grid.append((name, panels + [(f"sample {i}", m) for i, m in enumerate(generated.numpy())]))
            names += [(name, row, speakers, i) for i in range(count)]
            mels.append(generated)
        mels = torch.cat(mels)
        audio = self.crops.to_audio(mels.clamp(-1, 1))          # one batched Griffin-Lim
        # A sample is judged as speech of its label's speaker: `utterance` names one of the
        # speaker's test utterances (the speaker-similarity reference leaves it out).
        test_utterance = {u["speaker"]: u["id"] for u in reversed(self.index["utterances"])
                          if u["split"] == "test"}
        rendered = [RenderedItem(f"{name}-{i}", wave, metrics=self.profile_distances(mel, row, profiles),
                                 utterance=test_utterance.get(speakers[0]))
                    for (name, row, speakers, i), wave, mel in zip(names, audio, mels.numpy())]
        return [{"rendered": rendered, "grid": grid, "mels": mels.numpy(), "real_mels": real_mels,
                 "wasserstein": self.wasserstein_estimate("test"), "count": count}]

    def write_test(self, epoch, out_dir, rendered, writer, speaker_set):
        result = rendered[0]
        rendered, mels, real_mels, count = (result["rendered"], result["mels"], result["real_mels"],
                                            result["count"])
        frames = self.model_config.frames
        total, crops = result["wasserstein"]
        # Fréchet distances to the real test set of the modeling speakers, cut to the crop
        # length, with their floor (metrics/frechet.py), plus speaker similarity and DNSMOS;
        # and on the model's own output: frames of the scaled log-mel, generated vs. real.
        sections = {"frechet": {"scaled_log_mel": mel_frechet([m.T for m in mels], [m.T for m in real_mels])},
                    "labels": self.labels.kinds, "samples_per_label": count,
                    "wasserstein_test": total / crops if crops else None, "test_crops": crops}
        metrics = write_results(out_dir, epoch, self.crops.settings.sample_rate, rendered, writer,
                                "test", self.evaluation, speaker_set,
                                frames * self.crops.settings.hop_length, sections=sections)
        png = save_image_grid(out_dir / "grid.png", result["grid"])
        if writer is not None:
            writer.add_image("test/grid", png_to_array(png), epoch, dataformats="HWC")
        return metrics

    @staticmethod
    def profile_distances(mel: np.ndarray, row: tuple, profiles: dict) -> dict:
        """Mean absolute difference between the generated mel's band profile (mean over
        frames) and the real test mels' of its own label and, averaged, of the others."""
        profile = mel.mean(1)
        own = profiles.get(row)
        others = [p for r, p in profiles.items() if r != row and p is not None]
        return {"profile_l1_own": None if own is None else float(np.abs(profile - own).mean()),
                "profile_l1_others": float(np.mean([np.abs(profile - p).mean() for p in others]))
                if others else None}

"""MelNet in the shared loop: log-mel chunks through the same stateful loader.

Spectrograms are computed from the store's audio (HiFi-GAN convention, see
audio/mel.py) and standardized with the mean and standard deviation of the
training split's log-mel values. Long spectrograms are cut into chunks of
`model.chunk_frames` frames; the time-direction recurrent states of every
trained tier are carried from one chunk to the next (detached) and saved in
checkpoints. Test rendering: full multiscale samples, and "upsampling only"
from the real low-resolution spectrogram of test utterances, to audio by
Griffin-Lim, with a PNG per tier.
"""

from collections import OrderedDict

import numpy as np
import torch

from ..audio.mel import griffin_lim, mel_spectrogram
from ..audio.plots import save_images
from ..data.store import UtteranceStore
from ..errors import UserError
from ..models.melnet import MelNet, MelNetConfig
from .base import Runner
from .rendering import choose_test_utterances, write_results


class MelSource:
    """Stateful-loader source of standardized log-mel chunks: {"mel": (n, n_mels)}.

    Standardized with the mean and std of the log-mel values of `normalization_items`
    (the training split); the standardized spectrograms are what is cached.
    """

    def __init__(self, store: UtteranceStore, index: dict, config: MelNetConfig,
                 normalization_items, cache_size=256):
        self.store, self.config = store, config
        self.sample_rate = index["sample_rate"]
        self._frames = {u["id"]: (u["num_frames"] * index["hop_length"]) // config.hop_length
                        for u in index["utterances"]}
        self._cache = OrderedDict()
        self.cache_size = cache_size
        raw = {item: self.log_mel(item) for item in normalization_items}
        values = np.concatenate([mel.reshape(-1) for mel in raw.values()])
        self.mean, self.std = float(values.mean()), float(values.std() + 1e-5)
        for item, mel in list(raw.items())[:cache_size]:
            self._remember(item, self.standardize(mel))

    def log_mel(self, item) -> np.ndarray:
        """Un-standardized log-mel (frames, n_mels), computed from the store's audio."""
        c = self.config
        audio = torch.from_numpy(np.array(self.store.load(item).audio))
        return mel_spectrogram(audio, self.sample_rate, c.n_fft, c.hop_length, c.win_length,
                               c.n_mels, c.fmin, c.fmax).T.contiguous().numpy()

    def standardize(self, log_mel: np.ndarray) -> np.ndarray:
        return ((log_mel - self.mean) / self.std).astype(np.float32)

    def _remember(self, item, mel: np.ndarray) -> None:
        self._cache[item] = mel
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def normalized(self, item) -> np.ndarray:
        if item in self._cache:
            self._cache.move_to_end(item)
        else:
            self._remember(item, self.standardize(self.log_mel(item)))
        return self._cache[item]

    def num_frames(self, item) -> int:
        return self._frames[item]

    def chunk(self, item, start_frame, num_frames):
        return {"mel": self.normalized(item)[start_frame:start_frame + num_frames]}


class MelNetRunner(Runner):
    loss_name = "nll"
    find_unused_parameters = True   # `--tier K` trains one tier; the others get no gradient

    def build_model(self):
        self.model_config = MelNetConfig.from_dict(self.config["model"])
        if self.model_config.chunk_frames < 1:
            raise UserError("model.chunk_frames: MelNet trains in chunks; give a positive multiple "
                            "of 2 ** (time-splitting tiers)")
        self.source = MelSource(self.store, self.index, self.model_config,
                                normalization_items=self.utterance_ids("train"))
        self.state = None
        tier = self.config["training"]["tier"]
        self.train_tiers = list(range(1, self.model_config.tiers + 1))
        if tier is not None:
            self.select_tier(tier)
        return MelNet(self.model_config)

    def select_tier(self, tier: int) -> None:
        """Train only this tier (`train --tier K`); every tier stays in the checkpoints."""
        if not 1 <= tier <= self.model_config.tiers:
            raise UserError(f"--tier {tier}: the model has tiers 1..{self.model_config.tiers}")
        self.train_tiers = [tier]
        self.state = None

    def loader(self, split, epoch, shuffle):
        return self.stateful_loader(self.source, self.model_config.chunk_frames, split, epoch,
                                    shuffle)

    def train_batches(self, epoch, position):
        loader = self.loader("train", epoch, shuffle=True)
        if position is not None:
            loader.load_state_dict(position)
        else:
            self.state = None
        return loader

    def train_step(self, model, batch):
        mel = batch["mel"].to(self.device)
        reset, mask = batch["reset"].to(self.device), batch["mask"].to(self.device)
        loss, state, stats = model(mel, self.state, reset, mask, tiers=self.train_tiers)
        self.state = {k: {name: t.detach() for name, t in s.items()} for k, s in state.items()}
        return loss, {name: float(value) for name, value in stats.items()}

    def on_skipped_step(self):
        self.state = None

    def state_dict(self):
        return {"state": self.state, "train_tiers": self.train_tiers}

    def load_state_dict(self, state):
        if state.get("train_tiers") == self.train_tiers and state.get("state") is not None:
            self.state = {int(k): {n: t.to(self.device) for n, t in s.items()}
                          for k, s in state["state"].items()}
        else:   # another tier selection: its carried states do not apply
            self.state = None

    @torch.no_grad()
    def validation_loss(self):
        self.model.eval()
        state, total, count = None, 0.0, 0
        for batch in self.loader("validation", 0, shuffle=False):
            mel = batch["mel"].to(self.device)
            mask = batch["mask"].to(self.device)
            loss, state, _ = self.model(mel, state, batch["reset"].to(self.device), mask,
                                        tiers=self.train_tiers)
            rows = int(mask.sum())
            total += float(loss) * rows
            count += rows
        return total, count

    # --- test rendering -------------------------------------------------------------

    def to_audio(self, mel_normalized: torch.Tensor) -> np.ndarray:
        c = self.model_config
        log_mel = (mel_normalized * self.source.std + self.source.mean).T
        audio = griffin_lim(log_mel.cpu(), self.index["sample_rate"], c.n_fft, c.hop_length,
                            c.win_length, c.fmin, c.fmax).numpy()
        # Griffin-Lim does not bound the amplitude: scale a loud result down rather than
        # let the wav writer clip it.
        peak = float(np.abs(audio).max(initial=0.0))
        return audio * (0.95 / peak) if peak > 0.95 else audio

    def tier_images(self, stages: dict, reference: np.ndarray | None):
        def draw(path):
            panels = [(f"after tier {k}", stage.cpu().numpy().T) for k, stage in sorted(stages.items())]
            if reference is not None:
                panels.append(("reference", reference.T))
            return save_images(path, panels)
        return draw

    @torch.no_grad()
    def test(self, epoch, out_dir, writer=None, utterance_ids=None, speaker_set="modeling"):
        test_config = self.config["test"]
        c = self.model_config
        factor = self.model.time_factor
        if utterance_ids is None:
            utterance_ids = choose_test_utterances(self.index, test_config["utterances"], speaker_set)
        if not utterance_ids:
            raise UserError(f"test: no test utterance of {speaker_set} speakers in data.json")
        max_seconds = test_config["max_seconds"]
        max_frames = None if max_seconds is None else \
            int(max_seconds * self.index["sample_rate"]) // c.hop_length
        generator = torch.Generator(device=self.device).manual_seed(self.config["seed"] + epoch)
        self.model.eval()
        rendered = []
        for utterance_id in utterance_ids:
            real = self.source.normalized(utterance_id)
            frames = len(real) if max_frames is None else min(len(real), max_frames)
            frames -= frames % factor
            if frames == 0:
                continue
            real = torch.from_numpy(real[:frames]).to(self.device)[None]
            # Upsampling only: tiers 2..G from the real tier-1 spectrogram (the seed's experiment).
            lower = self.model.low_resolution(real, 2) if c.tiers > 1 else None
            if c.tiers > 1:
                upsampled, stages = self.model.upsample(lower, 2, frames, test_config["temperature"],
                                                        generator, return_tiers=True)
            else:
                upsampled, stages = real, {1: real[0]}
            stages = {k: v[0] for k, v in stages.items()}
            nll, _, per_tier = self.model(real, None, None, None)
            # The training loss: the sum of the tiers' NLLs (each listed too).
            metrics = {"nll": float(nll), **{k: float(v) for k, v in per_tier.items()},
                       "upsampling_l1": float((upsampled - real).abs().mean())}
            reference_audio = self.to_audio(real[0])
            rendered.append({"id": utterance_id + ".upsampled", "audio": self.to_audio(upsampled[0]),
                             "reference": reference_audio, "metrics": metrics,
                             "images": self.tier_images(stages, real[0].cpu().numpy())})
        # Full multiscale generation, unconditional: as many samples as test utterances.
        frames = max_frames or (self.model.time_factor * 16)
        frames -= frames % factor
        samples, stages = self.model.sample(len(rendered) or 1, frames, test_config["temperature"],
                                            generator, return_tiers=True)
        for row in range(samples.shape[0]):
            rendered.append({"id": f"sample-{row}", "audio": self.to_audio(samples[row]),
                             "reference": None,
                             "metrics": {"seconds": frames * c.hop_length / self.index["sample_rate"]},
                             "images": self.tier_images({k: v[row] for k, v in stages.items()}, None)})
        return write_results(out_dir, epoch, self.index["sample_rate"], rendered, writer,
                             "test" if speaker_set == "modeling" else f"test_{speaker_set}")

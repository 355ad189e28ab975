"""Scaled log-mel spectrograms of a whole corpus, computed once at `init`, and random crops.

For the mel-image families (VQ-VAE, GPT prior over its codes, conditional
WGAN-GP): `init` computes the log-mel of every utterance with the project's
one mel function (audio/mel.py), scales it to [-1, 1] and stores it in the
experiment as `mels.npz`, so that no later command computes a spectrogram
again. The scaling is linear between the minimum and maximum log-mel value of
the training split (`scale_min`, `scale_max`, stored in the same file);
values of other splits outside that range are clipped. A fixed range suits
image-style models (tanh-free decoders, hinge discriminators) better than
standardization, and the min/max of the training split need no assumption
about the recording level.

`mels.npz` holds one array for the whole corpus (utterances side by side
along time, `offsets` say where each starts) in float16: half the memory of
float32, and the rounding (< 1e-3 of the [-1, 1] range) is far below what a
model reconstructs. Training reads fixed-size crops (n_mels x crop_frames) at
offsets drawn per epoch by data/random_chunks.py, whose position is resumable
(`state_dict`), like every loader of the project.
"""

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..audio.mel import MelAnalysis, griffin_lim, mel_spectrogram
from ..errors import UserError
from ..files import read_arrays
from .random_chunks import RandomChunkLoader
from .store import UtteranceStore

MELS_FILE = "mels.npz"


@dataclass
class MelSettings(MelAnalysis):
    """The analysis behind the spectrograms: the model config's mel fields at the corpus's rate."""

    sample_rate: int = field(kw_only=True)

    @classmethod
    def from_config(cls, model: dict, sample_rate: int) -> "MelSettings":
        """From a `model` config section holding n_mels, n_fft, hop_length, ... fields."""
        names = {f.name for f in fields(cls)} - {"sample_rate"}
        return cls(sample_rate=sample_rate, **{k: v for k, v in model.items() if k in names})

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """Natural-log mel (n_mels, frames) of a waveform, by audio/mel.py."""
        return mel_spectrogram(torch.from_numpy(np.array(audio, dtype=np.float32)), self.sample_rate,
                               self.n_fft, self.hop_length, self.win_length, self.n_mels,
                               self.fmin, self.fmax).numpy()

    def to_arrays(self) -> dict:
        return {f"mel_{f.name}": np.array(np.nan if getattr(self, f.name) is None else getattr(self, f.name))
                for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays) -> "MelSettings":
        values = {}
        for f in fields(cls):
            value = arrays[f"mel_{f.name}"].item()
            if f.name == "fmax" and np.isnan(value):
                value = None
            values[f.name] = value
        return cls(**values)


def scale_log_mel(log_mel: np.ndarray, low: float, high: float) -> np.ndarray:
    """Natural-log mel -> [-1, 1], linear between `low` and `high`, clipped outside."""
    return np.clip(2.0 * (log_mel - low) / (high - low) - 1.0, -1.0, 1.0)


def compute_mels(data_index: dict, normalization: dict, data_path: Path, settings: MelSettings,
                 log) -> dict[str, np.ndarray]:
    """The arrays of `mels.npz`: scaled log-mels of every utterance of data.json."""
    if settings.sample_rate != data_index["sample_rate"]:
        raise UserError(f"model: mel sample rate {settings.sample_rate} differs from data.sample_rate "
                        f"{data_index['sample_rate']}")
    store = UtteranceStore(data_index, normalization, data_path, cache_size=1)
    utterances = data_index["utterances"]
    mels = [settings.log_mel(store.load(u["id"]).audio) for u in utterances]
    train = [m for m, u in zip(mels, utterances) if u["split"] == "train"]
    if not train:
        raise UserError("data: no training utterance to compute the mel scaling from")
    low = float(min(m.min() for m in train))
    high = float(max(m.max() for m in train))
    if not high > low:
        raise UserError("data: the training audio has a constant log-mel spectrogram (silence?)")
    lengths = np.array([m.shape[1] for m in mels], dtype=np.int64)
    joined = np.concatenate(mels, axis=1) if mels else np.zeros((settings.n_mels, 0), np.float32)
    scaled = scale_log_mel(joined, low, high).astype(np.float16)
    log.info("log-mel of %d utterances (%d frames, %d mels), scaled from [%.3f, %.3f] to [-1, 1]",
             len(mels), joined.shape[1], settings.n_mels, low, high)
    return {"ids": np.array([u["id"] for u in utterances]),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "mels": scaled, "scale_min": np.array(low, np.float64), "scale_max": np.array(high, np.float64),
            **settings.to_arrays()}


def prepare_mels(config: dict, data_index: dict, normalization: dict, data_path: Path, log) -> dict:
    """A runner's `prepare_experiment`: {"mels.npz": arrays}, mel settings from `config["model"]`."""
    settings = MelSettings.from_config(config["model"], data_index["sample_rate"])
    return {MELS_FILE: compute_mels(data_index, normalization, data_path, settings, log)}


class MelCrops:
    """The `mels.npz` of an experiment: scaled spectrograms by utterance id, crops, audio."""

    def __init__(self, path: Path):
        arrays = read_arrays(path, "log-mel spectrograms not found (written by `init` of a mel "
                                   "model; run `init` again)")
        self.settings = MelSettings.from_arrays(arrays)
        self.scale_min = float(arrays["scale_min"])
        self.scale_max = float(arrays["scale_max"])
        offsets = arrays["offsets"]
        self._mels = arrays["mels"]
        ids = [str(i) for i in arrays["ids"]]
        self._spans = {i: (int(offsets[k]), int(offsets[k + 1])) for k, i in enumerate(ids)}

    @classmethod
    def of_experiment(cls, root: Path) -> "MelCrops":
        return cls(Path(root) / MELS_FILE)

    @property
    def n_mels(self) -> int:
        return self.settings.n_mels

    def ids(self) -> list[str]:
        return list(self._spans)

    def num_frames(self, utterance_id: str) -> int:
        start, end = self._spans[utterance_id]
        return end - start

    def mel(self, utterance_id: str) -> np.ndarray:
        """Scaled log-mel (n_mels, frames), float32 in [-1, 1]."""
        start, end = self._spans[utterance_id]
        return self._mels[:, start:end].astype(np.float32)

    def scale(self, log_mel: np.ndarray) -> np.ndarray:
        """Natural-log mel -> this experiment's [-1, 1] scaling (e.g. another corpus's audio)."""
        return scale_log_mel(log_mel, self.scale_min, self.scale_max).astype(np.float32)

    def to_log_mel(self, scaled):
        """Back to natural-log mel (inverse of the scaling); numpy arrays or tensors."""
        return (scaled + 1.0) * 0.5 * (self.scale_max - self.scale_min) + self.scale_min

    def to_audio(self, scaled: torch.Tensor, num_iterations: int = 32) -> np.ndarray:
        """Waveform of a scaled log-mel (n_mels, frames) by Griffin-Lim (audio/mel.py)."""
        s = self.settings
        log_mel = self.to_log_mel(torch.as_tensor(scaled, dtype=torch.float32).cpu())
        return griffin_lim(log_mel, s.sample_rate, s.n_fft, s.hop_length, s.win_length, s.fmin, s.fmax,
                           num_iterations=num_iterations).numpy()

    def loader(self, utterance_ids: list[str], batch_size: int, crop_frames: int, seed: int,
               epoch: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> RandomChunkLoader:
        """Batches (batch, n_mels, crop_frames) of random crops: offsets and order drawn from
        (seed, epoch); shuffle=False gives the same crops every time (validation, test).
        Utterances shorter than a crop give none."""
        return RandomChunkLoader(self.mel, list(utterance_ids),
                                 [self.num_frames(i) for i in utterance_ids], batch_size,
                                 crop_frames, seed, epoch, rank, world_size, shuffle=shuffle)

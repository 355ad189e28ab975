"""MelNet's source for the stateful loader: standardized log-mel frames of the store's audio.

Spectrograms are computed from the store's audio with the project's one mel
function (audio/mel.py) and standardized with the mean and standard deviation
of the training split's log-mel values, computed once by `init`
(`mel_normalization`) into normalization.npz (`mel_mean`, `mel_std`).
"""

import numpy as np
import torch

from ..audio.mel import mel_spectrogram
from ..errors import UserError
from ..models.melnet import MelNetConfig
from .lru import LRUCache
from .normalization import standardization
from .stateful_loader import pad_frames
from .store import UtteranceStore

MEL_STD_FLOOR = 1e-5   # added to the std: a silent corpus must not divide by zero


class MelSource:
    """Stateful-loader source of standardized log-mel chunks: {"mel": (n, n_mels)}.

    Standardized with `mean` and `std` (normalization.npz); the standardized
    spectrograms are what is cached.
    """

    def __init__(self, store: UtteranceStore, index: dict, config: MelNetConfig,
                 mean: float, std: float, cache_size=256):
        self.store, self.config = store, config
        self.sample_rate = index["sample_rate"]
        self._frames = {u["id"]: (u["num_frames"] * index["hop_length"]) // config.hop_length
                        for u in index["utterances"]}
        self._cache = LRUCache(cache_size)
        self.mean, self.std = float(mean), float(std)

    def log_mel(self, item) -> np.ndarray:
        """Un-standardized log-mel (frames, n_mels), computed from the store's audio."""
        c = self.config
        audio = torch.from_numpy(np.array(self.store.load(item).audio))
        return mel_spectrogram(audio, self.sample_rate, c.n_fft, c.hop_length, c.win_length,
                               c.n_mels, c.fmin, c.fmax).T.contiguous().numpy()

    def standardize(self, log_mel: np.ndarray) -> np.ndarray:
        return ((log_mel - self.mean) / self.std).astype(np.float32)

    def normalized(self, item) -> np.ndarray:
        return self._cache.get(item, lambda key: self.standardize(self.log_mel(key)))

    def num_frames(self, item) -> int:
        return self._frames[item]

    def chunk(self, item, start_frame, num_frames):
        return {"mel": pad_frames(self.normalized(item)[start_frame:start_frame + num_frames],
                                  num_frames)}


def mel_normalization(config: MelNetConfig, data_index: dict, normalization: dict, data_path,
                      log) -> dict:
    """`init` of a MelNet experiment: mean and std of the log-mel values of the modeling
    speakers' training split, as arrays to add to normalization.npz."""
    store = UtteranceStore(data_index, normalization, data_path)
    source = MelSource(store, data_index, config, mean=0.0, std=1.0)
    mean, std, count = standardization((source.log_mel(item) for item in
                                        store.ids(split="train", speaker_set="modeling")), MEL_STD_FLOOR)
    if count == 0:
        raise UserError("data: no training audio of modeling speakers for MelNet's normalization")
    log.info("log-mel normalization over %d values: mean %.4f, std %.4f", count, mean, std)
    return {"mel_mean": np.float64(mean), "mel_std": np.float64(std)}

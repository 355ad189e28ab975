"""PASE's data: random chunks of audio with the workers' targets, computed in the loader.

The random-chunk loader (data/random_chunks.py) calls `ChunkTargets` for every
batch, so the targets are computed in the data pipeline (in the read-ahead
thread with `train --num-workers`), never in the training step.
"""

import math

import numpy as np
import torch

from ..models.pase import PASEConfig, worker_targets
from .features import utterance_f0
from .stateful_loader import pad_frames


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

"""PASE's data: random chunks of audio with the workers' targets, computed in the loader.

The random-chunk loader (data/random_chunks.py) calls `ChunkTargets` for every
batch, so the targets are computed in the data pipeline (in the read-ahead
thread with `train --num-workers`), never in the training step.
"""

import math

import numpy as np
import torch

from ..models.pase import PASEConfig, worker_targets
from ..models.pase_targets import world_f0
from .stateful_loader import pad_frames


class ChunkTargets:
    """The workers' targets of a batch of random chunks, computed in the data pipeline.

    WORLD F0, the slow part, is computed once per utterance on the encoder's
    frame grid and sliced for every chunk (chunk offsets are whole frames);
    the other targets come from the chunk itself (models/pase_targets.py).
    """

    def __init__(self, config: PASEConfig, audio_of):
        self.config, self.audio_of = config, audio_of
        self.hop = math.prod(config.conv_strides)
        self._f0: dict[str, np.ndarray] = {}

    def f0(self, item) -> np.ndarray:
        if item not in self._f0:
            c = self.config
            self._f0[item] = world_f0(self.audio_of(item), c.sample_rate, self.hop, c.f0_floor,
                                      c.f0_ceil)
        return self._f0[item]

    def __call__(self, chunks: list, wave: torch.Tensor) -> dict:
        frames = wave.shape[-1] // self.hop
        f0 = np.stack([pad_frames(self.f0(item)[offset // self.hop:offset // self.hop + frames], frames)
                       for item, offset in chunks])
        return {"targets": worker_targets(self.config, wave, f0)}

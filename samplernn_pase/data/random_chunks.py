"""Random fixed-length chunks, for models that are not recurrent: waveform chunks (PASE),
log-mel crops (data/mel_crops.py). Chunks are cut along the last axis of each array.

Each epoch, every utterance gives `floor(length / chunk)` chunks at offsets
drawn from a generator seeded by (seed, epoch); the chunks are shuffled and
dealt to the DDP ranks round-robin. Like the stateful loader, its position is
a plain dict so a mid-epoch checkpoint resumes at the next batch.

Offsets are multiples of `offset_step` (PASE: its frame hop, so that targets
computed once per utterance line up with every chunk). A batch is
{"chunk": (B, ..., chunk_samples), "chunks": [(item, offset)], **targets_of(chunks, chunk)}:
`targets_of` is where a model's training targets are computed, in the data
pipeline (and in `train --num-workers`'s read-ahead thread) rather than in the step.
"""

import numpy as np
import torch

from .planned_batches import PlannedBatches


class RandomChunkLoader(PlannedBatches):
    def __init__(self, audio_of, items: list, lengths: list[int], batch_size: int,
                 chunk_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, offset_step: int = 1, targets_of=None):
        self.audio_of = audio_of          # item -> float32 array (..., length): waveform or mel
        self.targets_of = targets_of      # (chunks, chunk) -> dict of extra batch entries
        self.batch_size = batch_size
        self.chunk_samples = chunk_samples
        self.position = 0
        rng = np.random.default_rng([seed, epoch if shuffle else 0])
        chunks = []
        for item, length in zip(items, lengths):
            count = length // chunk_samples
            if count == 0:
                continue
            slack = length - count * chunk_samples
            offsets = (rng.integers(0, slack // offset_step + 1, size=count) * offset_step
                       + np.arange(count) * chunk_samples)
            chunks += [(item, int(o)) for o in offsets]
        if shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        chunks = chunks[rank::world_size]
        # Equal batch counts on every rank keep DDP's collectives in step.
        per_rank = (sum(n // chunk_samples for n in lengths) // world_size) // batch_size
        self.batches = [chunks[i * batch_size:(i + 1) * batch_size] for i in range(per_rank)]

    def build(self, chunks: list) -> dict:
        signal = torch.from_numpy(np.stack([
            self.audio_of(item)[..., offset:offset + self.chunk_samples] for item, offset in chunks]))
        batch = {"chunk": signal, "chunks": chunks}
        if self.targets_of is not None:
            batch.update(self.targets_of(chunks, signal))
        return batch

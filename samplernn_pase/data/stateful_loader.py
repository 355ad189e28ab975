"""Truncated-BPTT loader: utterances stay in one batch slot until consumed.

A recurrent model trained with truncated back-propagation through time carries
its hidden state from one chunk of an utterance to the next, so the chunks of
an utterance must come in order and always in the same row of the batch. The
loader keeps ``batch_size`` slots; when a slot's item is consumed the next
item of the (shuffled) list takes it. Each batch says, per slot, whether the
chunk is the first of its item (``reset``: use the learnable initial state) and
whether the slot holds anything at all (``mask``: empty slots are zeros and
must be left out of the loss).

The loader is generic over a *source*: any object with

    source.num_frames(item) -> int
    source.chunk(item, start_frame, num_frames) -> dict[str, np.ndarray]

where ``item`` is one of the keys given to the loader (an utterance id, an
index, ...). The source decides what a chunk holds (waveform samples with a
look-back, conditioning frames, spectrogram frames); every chunk of a source
must have the same keys, shapes and dtypes, so a chunk that runs past the
item's end is zero-padded by the source (``pad_frames``). The sources of the
recurrent families are data/samplernn_source.py (waveform chunks and conditioning
frames) and data/mel_source.py (MelNet's standardized log-mel frames).

Epochs are finite: the iterator stops once every item has been consumed. The
last chunk of an item is usually shorter than ``chunk_frames``: it is padded
with zeros to the full length and ``frame_mask`` marks its real frames, so
utterance endings are trained (losses must weigh frames by ``frame_mask``).

Distributed training: the shuffled list is dealt round-robin to the ranks
(disjoint shards). Ranks would then finish after different numbers of batches
and a rank that stops early would leave the others hanging in DDP's gradient
all-reduce. Every rank therefore simulates the schedule of every rank (it is
deterministic and needs only ``num_frames``) and pads its own epoch with
all-empty batches (``mask`` all False) up to the longest one. Such a batch must
still go through forward/backward (its loss is zero; DDP averages it in).

The position is a plain JSON-able dict: the schedule is recomputed from the
seed, epoch and item list, so ``load_state_dict`` + iterating continues at
exactly the next chunk. The model's carried hidden state is not the loader's:
a runner that wants exact mid-epoch resume saves it next to this dict.
"""
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class _Step:
    """One filled slot in one batch of the schedule."""
    position: int      # index into the rank's item list
    start_frame: int
    first: bool


class StatefulLoader:
    """Batches of in-order chunks, one item per slot, finite epochs.

    Args:
        source: object with ``num_frames(item)`` and ``chunk(item, start, n)``.
        items: the item keys of the whole split (all ranks pass the same list).
        batch_size: number of slots (per rank).
        chunk_frames: frames per chunk (``sequence_length`` for SampleRNN).
        seed, epoch: the order of an epoch is a permutation seeded by both.
        rank, world_size: this process's shard of the items.
        shuffle: False keeps the given order (validation).

    Each batch is a dict: every key of the source's chunks, stacked into a
    tensor with a leading batch dimension (zeros in empty slots), plus

        reset        bool (B,)   first chunk of its item
        mask         bool (B,)   slot filled
        frame_mask   bool (B, chunk_frames)  real frames (False: padding after the
                                             item's end, or an empty slot)
        item         list (B,)   the item key in each slot, None if empty
        start_frame  int64 (B,)  first frame of the chunk in its item (-1 if empty)
    """

    def __init__(self, source, items, batch_size, chunk_frames, seed=0, epoch=0,
                 rank=0, world_size=1, shuffle=True):
        if batch_size < 1 or chunk_frames < 1:
            raise ValueError("batch_size and chunk_frames must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.source = source
        self.items = list(items)
        self.batch_size = batch_size
        self.chunk_frames = chunk_frames
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self._frames = [int(source.num_frames(item)) for item in self.items]
        self._template = None
        self.epoch = None
        self.set_epoch(epoch)

    # -- schedule ---------------------------------------------------------

    def _order(self, epoch):
        order = np.arange(len(self.items))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(order)
        return order

    def _shard(self, rank):
        return [int(i) for i in self._order(self.epoch)[rank::self.world_size]]

    def _schedule(self, shard):
        """Yields, per batch, a list of ``_Step`` or None for each slot."""
        chunks = [-(-self._frames[i] // self.chunk_frames) for i in shard]   # last one padded
        queue = iter([p for p, n in enumerate(chunks) if n > 0])
        slots = [None] * self.batch_size   # [position, next chunk index]
        exhausted = False
        while True:
            for s in range(self.batch_size):
                if slots[s] is None and not exhausted:
                    position = next(queue, None)
                    if position is None:
                        exhausted = True
                    else:
                        slots[s] = [position, 0]
            if all(slot is None for slot in slots):
                return
            batch = []
            for s, slot in enumerate(slots):
                if slot is None:
                    batch.append(None)
                    continue
                position, k = slot
                batch.append(_Step(position, k * self.chunk_frames, k == 0))
                slot[1] += 1
                if slot[1] == chunks[position]:
                    slots[s] = None
            yield batch

    def set_epoch(self, epoch):
        """Selects the epoch (its order); rewinds only if the epoch changes."""
        if epoch == self.epoch:
            return
        self.epoch = int(epoch)
        self.position = 0
        self._items_of_rank = self._shard(self.rank)
        self._num_batches = max(
            sum(1 for _ in self._schedule(self._shard(r)))
            for r in range(self.world_size))

    def __len__(self):
        """Batches in this epoch, equal on every rank (padding included)."""
        return self._num_batches

    @property
    def items_of_rank(self):
        """The item keys this rank reads in this epoch, in order."""
        return [self.items[i] for i in self._items_of_rank]

    # -- iteration --------------------------------------------------------

    def _empty_chunk(self):
        if self._template is None:
            first = next((i for i, n in enumerate(self._frames) if n > 0), None)
            if first is None:
                raise ValueError("no item has a frame")
            chunk = self.source.chunk(self.items[first], 0, self.chunk_frames)
            self._template = {k: np.zeros_like(v) for k, v in chunk.items()}
        return self._template

    def _collate(self, batch):
        chunks, reset, mask, item, start = [], [], [], [], []
        frame_mask = np.zeros((len(batch), self.chunk_frames), dtype=bool)
        for slot, step in enumerate(batch):
            if step is None:
                chunks.append(None)
                reset.append(False)
                mask.append(False)
                item.append(None)
                start.append(-1)
                continue
            index = self._items_of_rank[step.position]
            key = self.items[index]
            chunks.append(self.source.chunk(key, step.start_frame, self.chunk_frames))
            frame_mask[slot, :self._frames[index] - step.start_frame] = True
            reset.append(step.first)
            mask.append(True)
            item.append(key)
            start.append(step.start_frame)
        empty = self._empty_chunk()
        out = {k: torch.from_numpy(np.stack([empty[k] if c is None else c[k] for c in chunks]))
               for k in empty}
        out["reset"] = torch.tensor(reset, dtype=torch.bool)
        out["mask"] = torch.tensor(mask, dtype=torch.bool)
        out["frame_mask"] = torch.from_numpy(frame_mask)
        out["item"] = item
        out["start_frame"] = torch.tensor(start, dtype=torch.int64)
        return out

    def __iter__(self):
        """Batches from the current position to the end of the epoch.

        After the last batch ``position == len(self)``; iterating again runs
        the same epoch from its start (call ``set_epoch`` for the next one).
        """
        if self.position >= self._num_batches:
            self.position = 0
        schedule = self._schedule(self._items_of_rank)
        for index in range(self._num_batches):
            batch = next(schedule, None) or [None] * self.batch_size
            if index < self.position:
                continue
            collated = self._collate(batch)
            self.position = index + 1
            yield collated

    # -- checkpointing ----------------------------------------------------

    def state_dict(self):
        """Plain JSON-able position: resuming yields the next batch."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "num_items": len(self.items), "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size,
                "chunk_frames": self.chunk_frames}

    def load_state_dict(self, state):
        for key in ("num_items", "world_size", "batch_size", "chunk_frames"):
            mine = len(self.items) if key == "num_items" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(f"loader state was saved with {key}={state[key]}, now {mine}")
        self.seed = int(state["seed"])
        self.epoch = None
        self.set_epoch(state["epoch"])
        self.position = int(state["position"])


def pad_frames(values: np.ndarray, num_frames: int) -> np.ndarray:
    """`values` (frames, ...) zero-padded at the end to `num_frames` frames."""
    missing = num_frames - len(values)
    if missing <= 0:
        return np.ascontiguousarray(values)
    return np.concatenate([values, np.zeros((missing, *values.shape[1:]), values.dtype)])

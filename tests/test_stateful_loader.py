"""The truncated-BPTT loader: order, flags, coverage, finite epochs, resume, shards."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from samplernn_pase.audio.mulaw import mulaw_encode, mulaw_zero
from samplernn_pase.data.samplernn_source import SampleRNNSource
from samplernn_pase.data.stateful_loader import StatefulLoader, pad_frames


class FrameSource:
    """Each frame of item i holds (i, frame index + 1), so every chunk says where it came
    from; frames past the item's end are zeros (the source contract)."""

    def __init__(self, lengths):
        self.lengths = lengths

    def num_frames(self, item):
        return self.lengths[item]

    def chunk(self, item, start, n):
        frames = np.arange(start, min(start + n, self.lengths[item]))
        where = np.stack([np.full(len(frames), item), frames + 1], axis=1).astype(np.int64)
        return {"where": pad_frames(where, n)}


LENGTHS = {f"u{i}": n for i, n in enumerate([7, 3, 12, 1, 9, 5, 6, 2, 10, 4, 8, 11, 3])}


def make(items=None, **kwargs):
    lengths = {i: LENGTHS[k] for i, k in enumerate(LENGTHS)}
    options = dict(batch_size=3, chunk_frames=3, seed=5, epoch=0)
    options.update(kwargs)
    return StatefulLoader(FrameSource(lengths), items if items is not None else list(lengths), **options)


def run(loader):
    return [batch for batch in loader]


def test_chunks_in_order_in_one_slot_flags_and_coverage():
    loader = make()
    batches = run(loader)
    assert len(batches) == len(loader)
    seen = {}          # item -> list of (batch, slot, start, reset)
    for b, batch in enumerate(batches):
        assert batch["where"].shape == (3, 3, 2) and batch["frame_mask"].shape == (3, 3)
        for s in range(3):
            if not batch["mask"][s]:
                assert batch["item"][s] is None and not batch["reset"][s]
                assert int(batch["where"][s].abs().sum()) == 0
                assert not batch["frame_mask"][s].any()
                continue
            item = batch["item"][s]
            where = batch["where"][s].numpy()
            real = batch["frame_mask"][s].numpy()
            # real frames first, then padding: zeros, only in the item's last chunk
            assert real[0] and list(real) == sorted(real, reverse=True)
            assert (where[real, 0] == item).all() and (where[~real] == 0).all()
            assert int(batch["start_frame"][s]) + 1 == where[0, 1]
            seen.setdefault(item, []).append((b, s, int(where[0, 1]) - 1, bool(batch["reset"][s]),
                                              [int(f) - 1 for f in where[real, 1]]))
    for item, n in enumerate(LENGTHS.values()):
        chunks = seen[item]
        assert len(chunks) == -(-n // 3)                                      # endings included
        assert [f for *_, frames in chunks for f in frames] == list(range(n))  # every frame once
        assert len({s for _, s, *_ in chunks}) == 1                          # one slot
        assert [b for b, *_ in chunks] == list(range(chunks[0][0], chunks[0][0] + len(chunks)))
        assert [start for _, _, start, *_ in chunks] == [3 * k for k in range(len(chunks))]
        assert [r for *_, r, _ in chunks] == [True] + [False] * (len(chunks) - 1)
    # the epoch is over: the iterator ended and a slot is never left empty while items wait
    assert loader.position == len(loader)
    assert any(not m for m in batches[-1]["mask"].tolist())


def test_epochs_are_shuffled_and_reproducible():
    first = [b["item"] for b in run(make())]
    again = [b["item"] for b in run(make())]
    other = [b["item"] for b in run(make(epoch=1))]
    assert first == again
    assert first != other
    loader = make()
    run(loader)
    loader.set_epoch(1)
    assert [b["item"] for b in run(loader)] == other


def test_resume_mid_epoch_continues_at_the_next_chunk():
    reference = run(make())
    loader = make()
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    state = json.loads(json.dumps(loader.state_dict()))
    resumed = make(epoch=7)
    resumed.load_state_dict(state)
    rest = run(resumed)
    assert len(rest) == len(reference) - 4
    for got, want in zip(rest, reference[4:]):
        assert got["item"] == want["item"]
        assert (got["where"] == want["where"]).all()
        assert (got["reset"] == want["reset"]).all() and (got["mask"] == want["mask"]).all()
    with pytest.raises(ValueError):
        make(batch_size=4).load_state_dict(state)


def test_ddp_shards_are_disjoint_complete_and_equally_long():
    world = 3
    loaders = [make(rank=r, world_size=world) for r in range(world)]
    shards = [set(loader.items_of_rank) for loader in loaders]
    assert set().union(*shards) == set(range(len(LENGTHS)))
    assert sum(len(s) for s in shards) == len(LENGTHS)
    assert len({len(loader) for loader in loaders}) == 1
    covered = []
    for loader, shard in zip(loaders, shards):
        batches = run(loader)
        assert len(batches) == len(loader)
        items = {i for b in batches for i in b["item"] if i is not None}
        assert items <= shard
        covered += [tuple(frame) for b in batches for s, rows in enumerate(b["where"].numpy())
                    for frame in rows[b["frame_mask"][s].numpy()]]
    assert len(covered) == len(set(covered)) == sum(LENGTHS.values())


class FakeStore:
    """The UtteranceStore interface of docs/ARCHITECTURE.md, in memory."""

    def __init__(self, hop, frames):
        rng = np.random.default_rng(0)
        self.hop_length = hop
        self.utterances = {}
        for i, n in enumerate(frames):
            self.utterances[f"s{i}"] = SimpleNamespace(
                audio=rng.uniform(-1, 1, n * hop).astype(np.float32),
                acoustic=rng.normal(size=(n, 43)).astype(np.float32),
                linguistic_categorical=rng.integers(0, 4, (n, 2)),
                linguistic_real=rng.normal(size=(n, 3)).astype(np.float32),
                speaker_index=i % 2)

    def load(self, utterance_id):
        return self.utterances[utterance_id]


def test_samplernn_source_chunks_rebuild_the_utterance():
    store = FakeStore(hop=8, frames=[10, 4, 7])
    source = SampleRNNSource(store, frame_size=8, conditioning="linguistic_lf0")
    loader = StatefulLoader(source, list(store.utterances), batch_size=2, chunk_frames=3, seed=1)
    targets, conds = {}, {}
    for batch in loader:
        assert batch["input_samples_q"].shape == (2, 8 + 3 * 8)
        assert batch["acoustic"].shape == (2, 3, 43) and batch["linguistic_categorical"].shape == (2, 3, 2)
        for s, item in enumerate(batch["item"]):
            if item is None:
                continue
            codes = batch["input_samples_q"][s].numpy()
            audio = store.utterances[item].audio
            start = int(batch["start_frame"][s])
            if batch["reset"][s]:
                assert (codes[:8] == mulaw_zero(256)).all()
            else:
                assert (codes[:8] == mulaw_encode(audio[(start - 1) * 8:start * 8])).all()
            real = batch["frame_mask"][s].numpy()
            samples = codes[8:].reshape(3, 8)
            assert (samples[~real] == mulaw_zero(256)).all()                  # padded with silence
            assert (batch["acoustic"][s].numpy()[~real] == 0).all()
            targets.setdefault(item, []).append(samples[real].reshape(-1))
            conds.setdefault(item, []).append(batch["acoustic"][s].numpy()[real])
            assert int(batch["speaker_index"][s]) == store.utterances[item].speaker_index
    for item, u in store.utterances.items():      # the whole utterance, its ending included
        assert (np.concatenate(targets[item]) == mulaw_encode(u.audio)).all()
        assert np.allclose(np.concatenate(conds[item]), u.acoustic)
    with pytest.raises(ValueError):
        SampleRNNSource(store, frame_size=16)

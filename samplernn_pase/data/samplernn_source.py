"""SampleRNN's source for the stateful loader: waveform chunks and conditioning frames.

The stateful loader (data/stateful_loader.py) asks a source for the frame count
of an utterance and for chunks of it; this one reads them from an
``UtteranceStore``.
"""

import numpy as np

from ..audio.mulaw import mulaw_encode, mulaw_zero
from .stateful_loader import pad_frames


class SampleRNNSource:
    """Chunks of utterances for SampleRNN, read from an ``UtteranceStore``.

    ``frame_size`` (``prod(ratios)``) must equal the store's ``hop_length`` so
    that one conditioning frame covers one top-tier frame. A chunk of ``n``
    frames starting at frame ``s`` is

        input_samples_q         int64 (n * frame_size + frame_size,) mu-law codes;
                                the first frame_size are the look-back (the
                                previous frame, or silence at the start)
        acoustic                float32 (n, A)   if the conditioning uses it
        linguistic_categorical  int64 (n, C)     if the conditioning uses it
        linguistic_real         float32 (n, R)   if the conditioning uses it
        speaker_index           int64 ()

    The targets are ``input_samples_q[frame_size:]``. Utterances are read
    through ``store.load``, which keeps recently loaded ones in memory, so a
    slot reads its utterance from disk once. Frame counts come from ``num_frames`` (id -> frames) or the store's
    ``index`` (data.json), so planning an epoch loads no audio.
    """

    FEATURES = {
        "acoustic": ("acoustic",),
        "linguistic": ("linguistic_categorical", "linguistic_real"),
        "linguistic_lf0": ("acoustic", "linguistic_categorical", "linguistic_real"),
    }

    def __init__(self, store, frame_size, conditioning="linguistic_lf0", q_levels=256,
                 hop_length=None, num_frames=None):
        if conditioning not in self.FEATURES:
            raise ValueError(f"unknown conditioning {conditioning!r}")
        index = getattr(store, "index", None)
        if not isinstance(index, dict):
            index = {}
        if num_frames is None and "utterances" in index:
            num_frames = {u["id"]: u["num_frames"] for u in index["utterances"]}
        hop_length = hop_length or getattr(store, "hop_length", None) or index.get("hop_length", frame_size)
        if hop_length != frame_size:
            raise ValueError(f"frame size {frame_size} (product of the ratios) must equal "
                             f"the hop length {hop_length} of the features")
        self.store = store
        self.frame_size = frame_size
        self.features = self.FEATURES[conditioning]
        self.q_levels = q_levels
        self._num_frames = dict(num_frames or {})

    def _load(self, item):
        utterance = self.store.load(item)
        for name in self.features:
            if getattr(utterance, name) is None:
                raise ValueError(f"utterance {item} has no {name} features")
        if item not in self._num_frames:
            self._num_frames[item] = int(utterance.acoustic.shape[0] if utterance.acoustic is not None
                                         else len(utterance.audio) // self.frame_size)
        return utterance

    def num_frames(self, item):
        if item not in self._num_frames:
            self._load(item)
        return self._num_frames[item]

    def chunk(self, item, start_frame, num_frames):
        u = self._load(item)
        fs = self.frame_size
        begin, end = (start_frame - 1) * fs, (start_frame + num_frames) * fs
        audio = np.asarray(u.audio[max(begin, 0):end], dtype=np.float32)
        codes = np.full(end - begin, mulaw_zero(self.q_levels), dtype=np.int64)
        codes[max(-begin, 0):max(-begin, 0) + len(audio)] = mulaw_encode(audio, self.q_levels)
        out = {"input_samples_q": codes,
               "speaker_index": np.asarray(u.speaker_index, dtype=np.int64)}
        for name in self.features:
            out[name] = pad_frames(getattr(u, name)[start_frame:start_frame + num_frames], num_frames)
        return out

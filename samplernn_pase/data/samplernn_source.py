"""SampleRNN's source for the stateful loader: waveform chunks and conditioning frames.

The stateful loader (data/stateful_loader.py) asks a source for the frame count
of an utterance and for chunks of it; this one reads them from an
``UtteranceStore``.
"""

import numpy as np

from ..audio.excitation import (envelope_gain, excitation_scale, harmonic_source, periodic_fraction, predict,
                                predictor_from_mel_cepstrum, synthesis_phases)
from ..audio.mulaw import mulaw_encode, mulaw_zero
from .lru import LRUCache
from .stateful_loader import pad_frames

# The aligned vocoder inputs of the utterances last read, within this many bytes (about 40
# minutes of audio; the demo's training split, 124 utterances, takes 115 MB). Computing them
# (a heterodyne per harmonic) takes about 0.1 s for each second of audio, so a cache smaller
# than the training split recomputes every utterance in every epoch: a third of an epoch of
# the demo's vocoder on two threads.
VOCODER_CACHE_BYTES = 1 << 30
ALIGNMENT_LPC_ORDER = 16  # without a predictor of its own, the source aligns to this one's residual


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
        lpc                     float32 (n, order)  with ``lpc_order`` > 0: the linear
                                predictor of each frame's envelope (audio/excitation.py)
        source                  float32 (n, frame_size, 2 c + 1)  with ``source_context``
                                c >= 0: the harmonic source around every sample, its
                                phase aligned to the recording's residual
        harmonic                float32 (n, frame_size)  with both: the periodic part of
                                every sample's excitation, added to the prediction
        aperiodic               float32 (n, frame_size)  with both: the rest of the
                                recording's (unquantized) prediction residual, whose
                                mu-law codes are the targets
        excitation_scale        float32 (n, 1)  with ``excitation_gain``: the aperiodic
                                excitation's expected RMS in each frame over
                                EXCITATION_RMS (`excitation_scale`); the targets are
                                the codes of ``aperiodic`` divided by it

    The targets are ``input_samples_q[frame_size:]`` (with a predictor, the codes of
    ``aperiodic``, see SampleRNN.targets). Utterances are read
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
                 hop_length=None, num_frames=None, lpc_order=0, source_context=None, harmonic_envelope=True,
                 excitation_gain=False):
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
        self.lpc_order, self.source_context = lpc_order, source_context
        self.harmonic_envelope, self.excitation_gain = harmonic_envelope, excitation_gain
        self._vocoder_inputs = LRUCache(None, VOCODER_CACHE_BYTES,
                                        weigh=lambda arrays: sum(a.nbytes for a in arrays.values()))

    def _load(self, item):
        utterance = self.store.load(item)
        for name in self.features:
            if getattr(utterance, name) is None:
                raise ValueError(f"utterance {item} has no {name} features")
        if item not in self._num_frames:
            self._num_frames[item] = int(utterance.acoustic.shape[0] if utterance.acoustic is not None
                                         else len(utterance.audio) // self.frame_size)
        return utterance

    def vocoder_inputs(self, item, aligned=True):
        """{"lpc", "source", "harmonic"} of an utterance (the keys enabled, see the class).
        ``aligned``: the harmonics take their phases and amplitudes from the recording's residual
        (training, teacher forcing; kept within VOCODER_CACHE_BYTES); otherwise they have
        the fixed synthesis phases (generation, or no recording)."""
        utterance = self._load(item)
        if not aligned or utterance.audio is None:
            return vocoder_inputs(self.store, utterance, self.frame_size, self.q_levels, self.lpc_order,
                                  self.source_context, aligned=False, harmonic_envelope=self.harmonic_envelope,
                                  excitation_gain=self.excitation_gain)
        return self._vocoder_inputs.get(item, lambda _: vocoder_inputs(
            self.store, utterance, self.frame_size, self.q_levels, self.lpc_order, self.source_context,
            excitation_gain=self.excitation_gain))

    def conditioning(self, item, aligned=True):
        """Every conditioning array of the utterance, one row per frame."""
        utterance = self._load(item)
        arrays = {name: getattr(utterance, name) for name in self.features}
        if self.lpc_order or self.source_context is not None:
            arrays.update(self.vocoder_inputs(item, aligned))
        return arrays

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
        for name, values in self.conditioning(item).items():
            out[name] = pad_frames(values[start_frame:start_frame + num_frames], num_frames)
        return out


def vocoder_inputs(store, utterance, frame_size, q_levels, lpc_order, source_context, aligned=True,
                   harmonic_envelope=True, excitation_gain=False):
    """The linear predictor of every frame, the harmonic source windows around every sample
    and, with both, the periodic part of every sample's excitation (see SampleRNNSource and
    audio/excitation.py). ``aligned`` (and a recording): the harmonics take their phases (and
    the periodic part its amplitudes) from the prediction residual of the recording, and with
    both options ``aperiodic`` holds the rest of that residual, the training target. Else
    (synthesis) the periodic part's harmonics have equal amplitudes or, with
    ``harmonic_envelope``, the amplitudes by which the mel-cepstrum's envelope exceeds the
    predictor's (`envelope_gain`), which is what the recording's residual gives them in
    training.

    The residual is that of the recording itself, not of its mu-law values: the mu-law
    rounding error is white at about -38 dB of the signal, but through the inverse filter
    A(z) it is lifted by the prediction gain, and on the demo recordings it is a third of
    the residual's power in voiced frames (2.2e-4 with it, 1.4e-4 without, demo_f1_015).
    A network trained on it learns to sample it as excitation noise, which its synthesis
    then sends through 1 / A(z): the noise floor that hid the harmonics (issue 23).

    ``excitation_gain`` (with ``lpc_order``): ``excitation_scale``, each frame's expected
    aperiodic RMS from its features (`excitation_scale`), by which the model divides its
    targets and multiplies what it draws."""
    acoustic = store.raw_acoustic(utterance).astype(np.float64)
    fields = store.index["acoustic_fields"]
    mcep = acoustic[:, fields.index("mcep0"):fields.index("bap")]
    alpha = store.index["feature_params"]["mcep_alpha"]
    out = {}
    align = source_context is not None and aligned and utterance.audio is not None
    if lpc_order or align:
        coefficients, error_power = predictor_from_mel_cepstrum(mcep, alpha, lpc_order or ALIGNMENT_LPC_ORDER)
    # the periodic share of each frame's excitation: the harmonic source's, none without it
    periodic = periodic_fraction(acoustic[:, fields.index("bap")]) if source_context is not None else 0.0
    if lpc_order:
        out["lpc"] = coefficients
        if excitation_gain:
            out["excitation_scale"] = excitation_scale(error_power * (1.0 - periodic))[:, None]
    if source_context is not None:
        residual = None
        if align:
            values = np.zeros(len(acoustic) * frame_size)
            audio = np.asarray(utterance.audio, np.float64)[:len(values)]
            values[:len(audio)] = audio
            residual = values - predict(values, coefficients, frame_size)
        periodic_power = error_power * periodic if lpc_order else None
        gain = envelope_gain(mcep, alpha, coefficients, error_power) \
            if lpc_order and harmonic_envelope and residual is None else None
        pulses, harmonic = harmonic_source(acoustic[:, fields.index("lf0")], acoustic[:, fields.index("vuv")],
                                           frame_size, store.sample_rate, align_to=residual,
                                           power=periodic_power, harmonic_phases=synthesis_phases(), gain=gain)
        padded = np.pad(pulses, source_context)
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * source_context + 1)
        out["source"] = np.ascontiguousarray(windows).reshape(len(acoustic), frame_size, -1)
        if lpc_order:
            out["harmonic"] = harmonic.reshape(len(acoustic), frame_size)
            if residual is not None:
                out["aperiodic"] = (residual - harmonic).astype(np.float32).reshape(len(acoustic), frame_size)
    return out

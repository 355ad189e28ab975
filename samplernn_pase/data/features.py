"""Per-utterance features: WORLD acoustic features and frame-rate linguistic features.

Acoustic layout (`acoustic_fields(mcep_order)`, 43 dimensions at the default
mcep_order 39), one row per frame of `hop_length` samples (5 ms at 16 kHz / 80):

    0        lf0      log F0 (Hz), linearly interpolated through unvoiced frames
    1        vuv      voiced flag, 1.0 voiced / 0.0 unvoiced (not normalized)
    2..41    mcep0..mcep39   mel-cepstrum c0..c39 of the WORLD envelope
                      (pysptk.sp2mc, order 39, all-pass constant for the sample rate)
    42       bap      aperiodicity in dB, WORLD's coded band aperiodicity averaged
                      over bands (one band at 16 kHz)

This is the seed's 43-dimensional acoustic conditioning (40 cepstral
coefficients + log-F0 + voicing + one aperiodicity measure). WORLD frame t is
centred on sample t * hop_length; an utterance of N samples has N // hop_length
frames and its audio is trimmed to that many frames.

Linguistic features (when an HTS label file is present) stay at phone level in
the cache (symbols, numbers and durations, see hts_labels); `phone_index` and
`position_in_phone` map every frame onto its phone, and `expand_linguistic`
gives the 45 real columns of every frame (docs/linguistic_features.md).
"""

import functools
from pathlib import Path

import numpy as np

from ..audio.io import AudioReadError, read_audio
from ..audio.world import interpolated_log_f0, world_f0
from . import hts_labels

FEATURE_VERSION = 2  # bump when the extraction changes, so caches are recomputed


class BadInput(Exception):
    """An input file that is left out; `reason` is the key of the report in data.json."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def acoustic_fields(mcep_order: int) -> list[str]:
    return ["lf0", "vuv"] + [f"mcep{i}" for i in range(mcep_order + 1)] + ["bap"]


FLAG_FIELDS = ("vuv",)


def feature_params(data_config: dict) -> dict:
    """The part of the data config that decides the content of the feature cache."""
    import pysptk

    sample_rate = data_config["sample_rate"]
    alpha = data_config["mcep_alpha"]
    if alpha is None:
        alpha = float(round(pysptk.util.mcepalpha(sample_rate), 4))
    return {
        "version": FEATURE_VERSION,
        "sample_rate": sample_rate,
        "hop_length": data_config["hop_length"],
        "f0_method": data_config["f0_method"],
        "f0_floor": float(data_config["f0_floor"]),
        "f0_ceil": float(data_config["f0_ceil"]),
        "mcep_order": data_config["mcep_order"],
        "mcep_alpha": alpha,
        "min_seconds": float(data_config["min_seconds"]),
        "label_tolerance_seconds": float(data_config["label_tolerance_seconds"]),
    }


def utterance_f0(signal: np.ndarray, params: dict, hop_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """audio/world.py's F0 (in Hz, 0 where unvoiced; frame times in s), with the estimator and
    F0 range of `params` (feature_params of data.json, or the data config: the same keys), so
    that the features, the metrics (F0 RMSE, V/UV, the envelope behind MCD) and PASE's
    prosody target see the same F0. A frame every params["hop_length"] samples, or
    `hop_length` for another frame grid (PASE's 10 ms)."""
    return world_f0(signal, params["sample_rate"], hop_length or params["hop_length"], float(params["f0_floor"]),
                    float(params["f0_ceil"]), params["f0_method"])


def spectral_envelope(signal: np.ndarray, f0: np.ndarray, times: np.ndarray, params: dict) -> np.ndarray:
    """WORLD (CheapTrick) power spectral envelope, (frames, fft_size // 2 + 1)."""
    import pyworld

    signal = np.ascontiguousarray(signal, dtype=np.float64)
    return pyworld.cheaptrick(signal, f0, times, params["sample_rate"], f0_floor=params["f0_floor"])


def acoustic_features(audio: np.ndarray, params: dict) -> np.ndarray:
    """(num_frames, 43) float32 WORLD features of mono audio at params["sample_rate"]."""
    import pyworld

    sample_rate, hop_length = params["sample_rate"], params["hop_length"]
    num_frames = len(audio) // hop_length
    signal = audio.astype(np.float64)
    f0, times = utterance_f0(signal, params)
    envelope = spectral_envelope(signal, f0, times, params)
    aperiodicity = pyworld.d4c(signal, f0, times, sample_rate)

    mcep = mel_cepstrum(envelope, params["mcep_order"], params["mcep_alpha"])
    if pyworld.get_num_aperiodicities(sample_rate) > 0:
        bap = pyworld.code_aperiodicity(aperiodicity, sample_rate).mean(axis=1)
    else:
        bap = (20 * np.log10(np.maximum(aperiodicity, 1e-12))).mean(axis=1)
    voiced = f0 > 0
    if not voiced.any():
        raise BadInput("no_voiced_frames", "WORLD found no voiced frame")
    lf0 = interpolated_log_f0(f0)

    features = np.concatenate([lf0[:, None], voiced[:, None].astype(np.float64), mcep, bap[:, None]], axis=1)
    if len(features) < num_frames:  # WORLD gives N // hop + 1 frames; pad defensively
        features = np.concatenate([features, np.repeat(features[-1:], num_frames - len(features), axis=0)])
    return features[:num_frames].astype(np.float32)


def features_f0(acoustic: np.ndarray) -> np.ndarray:
    """F0 in Hz (0 where unvoiced) of (un-normalized) acoustic features: exp(lf0) where the
    voiced flag is set."""
    acoustic = np.asarray(acoustic, dtype=np.float64)
    return np.where(acoustic[:, 1] > 0.5, np.exp(acoustic[:, 0]), 0.0)


def world_resynthesis(acoustic: np.ndarray, params: dict) -> np.ndarray:
    """Audio from (un-normalized) acoustic features by the WORLD vocoder: the classical baseline.

    The inverse of `acoustic_features`: F0 = exp(lf0) where the voiced flag is
    set, the envelope from the mel-cepstrum by pysptk.mc2sp with the same
    all-pass constant, the aperiodicity from the band aperiodicity by
    pyworld.decode_aperiodicity (the one averaged band repeated over the bands).
    """
    import pysptk
    import pyworld

    sample_rate, order = params["sample_rate"], params["mcep_order"]
    acoustic = np.asarray(acoustic, dtype=np.float64)
    f0 = features_f0(acoustic)
    mcep = np.ascontiguousarray(acoustic[:, 2:3 + order])
    fft_size = pyworld.get_cheaptrick_fft_size(sample_rate, params["f0_floor"])
    envelope = np.ascontiguousarray(pysptk.mc2sp(mcep, params["mcep_alpha"], fft_size))
    bap = acoustic[:, 3 + order]
    bands = pyworld.get_num_aperiodicities(sample_rate)
    if bands > 0:
        coded = np.ascontiguousarray(np.repeat(bap[:, None], bands, axis=1))
        aperiodicity = pyworld.decode_aperiodicity(coded, sample_rate, fft_size)
    else:
        aperiodicity = np.repeat(10.0 ** (bap[:, None] / 20.0), fft_size // 2 + 1, axis=1)
    frame_period = 1000.0 * params["hop_length"] / sample_rate
    audio = pyworld.synthesize(np.ascontiguousarray(f0), envelope, np.ascontiguousarray(aperiodicity),
                               sample_rate, frame_period)
    return audio[:len(acoustic) * params["hop_length"]].astype(np.float32)


@functools.lru_cache(maxsize=8)
def _frequency_warping_matrix(cepstrum_length: int, order: int, alpha: float) -> np.ndarray:
    """pysptk.freqt is linear in its input: its matrix, built once from unit vectors."""
    import pysptk

    return np.stack([pysptk.freqt(row, order, alpha) for row in np.eye(cepstrum_length)], axis=0)


def mel_cepstrum(power_envelope: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """pysptk.sp2mc for a whole utterance at once (sp2mc loops over frames in Python,
    which made it the slowest step of extraction)."""
    cepstrum = np.fft.irfft(np.log(power_envelope))
    cepstrum[:, 0] /= 2.0
    return cepstrum @ _frequency_warping_matrix(cepstrum.shape[1], order, alpha)


def extract_utterance(audio_path: Path, label_path: Path | None, params: dict) -> dict[str, np.ndarray]:
    """Everything the cache keeps about one utterance (see cache.py); raises BadInput."""
    sample_rate, hop_length = params["sample_rate"], params["hop_length"]
    try:
        audio, _, info = read_audio(audio_path, sample_rate)
    except AudioReadError as error:
        reason = "empty_audio" if "empty audio" in str(error) else "unreadable_audio"
        raise BadInput(reason, str(error)) from None
    if not np.all(np.isfinite(audio)):
        raise BadInput("nan_features", "audio contains NaN or Inf samples")
    num_frames = len(audio) // hop_length
    if num_frames * hop_length < params["min_seconds"] * sample_rate or num_frames < 2:
        raise BadInput("too_short", f"{len(audio) / sample_rate:.3f} s is shorter than min_seconds")
    if np.max(np.abs(audio)) < 1e-6:
        raise BadInput("silent_audio", "the audio is digital silence")
    audio = audio[: num_frames * hop_length]

    result = {"audio": audio,
              "resampled": np.int8(info["resampled"]), "downmixed": np.int8(info["downmixed"])}
    if label_path is not None:
        try:
            labels = hts_labels.read_labels(label_path)
        except hts_labels.LabelError as error:
            raise BadInput("bad_labels", f"{label_path}: {error}") from None
        seconds = len(audio) / sample_rate
        if abs(labels.duration - seconds) > params["label_tolerance_seconds"] + hop_length / sample_rate:
            raise BadInput("label_duration_mismatch",
                           f"{label_path}: labels last {labels.duration:.3f} s, audio {seconds:.3f} s")
        phone_index, position = hts_labels.frame_alignment(labels, num_frames, hop_length / sample_rate)
        durations = labels.phone_durations
        frame_real = expand_linguistic(phone_index, position, durations, labels.real).astype(np.float64)
        result.update(phone_index=phone_index, position_in_phone=position, phone_duration=durations,
                      phone_categorical=labels.categorical, phone_real=labels.real,
                      linguistic_sum=frame_real.sum(axis=0), linguistic_sumsq=np.square(frame_real).sum(axis=0))

    acoustic = acoustic_features(audio, params)
    if not np.all(np.isfinite(acoustic)):
        raise BadInput("nan_features", "acoustic features contain NaN or Inf")
    result.update(acoustic=acoustic, acoustic_sum=acoustic.astype(np.float64).sum(axis=0),
                  acoustic_sumsq=np.square(acoustic.astype(np.float64)).sum(axis=0))
    return result


def expand_linguistic(phone_index: np.ndarray, position_in_phone: np.ndarray, phone_duration: np.ndarray,
                      phone_real: np.ndarray) -> np.ndarray:
    """(num_frames, 45) real linguistic columns (hts_labels.FRAME_REAL_FIELDS): the phone's
    duration in seconds, the frame's position in the phone, the phone's 43 numeric fields."""
    return np.concatenate([phone_duration[phone_index, None], position_in_phone[:, None], phone_real[phone_index]],
                          axis=1).astype(np.float32)

"""MCD, F0 RMSE and V/UV error of generated speech against a time-aligned reference.

Both signals go through the features' own WORLD analysis (data/features.py:
`utterance_f0`, `spectral_envelope`, `mel_cepstrum`) with the experiment's feature
parameters (`feature_params` of data.json): the same F0 estimator and range,
all-pass constant, mel-cepstrum order and frame period as the conditioning
features, so a metric and a feature never disagree about what F0 or c_n is.
Generation is conditioned on the reference's own frames, so the two are
compared frame by frame over their common length (no DTW).
"""

import math
from dataclasses import dataclass

import numpy as np

import torch

from ..audio.mel import stft
from ..data.features import features_f0, mel_cepstrum, spectral_envelope, utterance_f0

#: (n_fft, hop_length, win_length) of the multi-resolution STFT distance: Parallel WaveGAN's
#: (Yamamoto et al. 2020), the figure neural-vocoder papers report beside MOS.
STFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


@dataclass
class Analysis:
    """What the metrics need of one signal: F0 (Hz, 0 = unvoiced) and mel-cepstrum per frame."""

    f0: np.ndarray          # (frames,)
    mcep: np.ndarray        # (frames, order + 1), c0 first


def analyse(audio: np.ndarray, params: dict) -> Analysis:
    signal = np.ascontiguousarray(audio, dtype=np.float64)
    f0, times = utterance_f0(signal, params)
    envelope = spectral_envelope(signal, f0, times, params)
    return Analysis(f0, mel_cepstrum(envelope, params["mcep_order"], params["mcep_alpha"]))


def feature_analysis(acoustic: np.ndarray, params: dict) -> Analysis:
    """The Analysis that (un-normalized) acoustic features describe, without audio: their F0
    and mel-cepstrum columns. Features a model predicts are compared with a recording's own
    features this way, frame by frame."""
    acoustic = np.asarray(acoustic, np.float64)
    return Analysis(features_f0(acoustic), acoustic[:, 2:3 + params["mcep_order"]])


def frame_distortions(mcep_a: np.ndarray, mcep_b: np.ndarray) -> np.ndarray:
    """(frames,) each frame's (10 / ln 10) sqrt(2 sum_{n>=1} (a_n - b_n)^2) in dB, over the common
    length; c0 (energy) excluded."""
    frames = min(len(mcep_a), len(mcep_b))
    diff = np.asarray(mcep_a[:frames, 1:], np.float64) - np.asarray(mcep_b[:frames, 1:], np.float64)
    return 10.0 / math.log(10.0) * np.sqrt(2.0 * np.sum(diff ** 2, axis=1))


def mel_cepstral_distortion(mcep_a: np.ndarray, mcep_b: np.ndarray) -> float:
    """MCD in dB: the mean over frames of `frame_distortions`."""
    return float(np.mean(frame_distortions(mcep_a, mcep_b)))


def compare(generated: Analysis, reference: Analysis, f0_frames: np.ndarray | None = None) -> dict:
    """mcd_db; f0_rmse_hz over frames voiced in both (None when there is none); vuv_error,
    the fraction of frames whose voicing decisions differ.

    `f0_frames` (bool, a frame each) narrows F0 RMSE to those frames as well: two systems
    compared on the frames that the reference and both of them call voiced. Over each
    system's own voiced frames, one that leaves the hard frames unvoiced scores a lower
    RMSE for what it did not render (bench/fine_tuning.py, `f0_rmse_common_hz`)."""
    frames = min(len(generated.f0), len(reference.f0))
    f0_gen, f0_ref = generated.f0[:frames], reference.f0[:frames]
    voiced_gen, voiced_ref = f0_gen > 0, f0_ref > 0
    both = voiced_gen & voiced_ref
    if f0_frames is not None:
        both &= np.asarray(f0_frames[:frames], bool)
    rmse = float(np.sqrt(np.mean((f0_gen[both] - f0_ref[both]) ** 2))) if both.any() else None
    return {"mcd_db": mel_cepstral_distortion(generated.mcep, reference.mcep),
            "f0_rmse_hz": rmse, "vuv_error": float(np.mean(voiced_gen != voiced_ref))}


def speech_metrics(generated: np.ndarray, reference: np.ndarray, params: dict) -> dict:
    return compare(analyse(generated, params), analyse(reference, params))


def multi_resolution_stft_distance(generated: np.ndarray, reference: np.ndarray,
                                   resolutions=STFT_RESOLUTIONS) -> float:
    """Mean over resolutions of spectral convergence ||S - S'||_F / ||S||_F plus the mean
    |log S - log S'| of the STFT magnitudes (centred frames, magnitudes floored at 1e-7),
    over the common length of two time-aligned signals."""
    length = min(len(generated), len(reference))
    pair = torch.from_numpy(np.stack([np.asarray(generated[:length], np.float32),
                                      np.asarray(reference[:length], np.float32)]))
    total = 0.0
    for n_fft, hop, win in resolutions:
        magnitude = stft(pair, n_fft, hop, win, n_fft // 2).abs().clamp(min=1e-7).double()
        fake, real = magnitude[0], magnitude[1]
        convergence = torch.linalg.norm(real - fake) / torch.linalg.norm(real).clamp(min=1e-12)
        total += float(convergence + (real.log() - fake.log()).abs().mean())
    return total / len(resolutions)

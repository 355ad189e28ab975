"""Objective measures of generated speech against the reference recording.

Both signals are analysed the same way (WORLD F0 by DIO + StoneMask, WORLD
spectral envelope to mel-cepstrum with pysptk), frame by frame over their
common length: generation is conditioned on the reference's own frames, so
the two are time-aligned and no DTW is needed.
"""

import math

import numpy as np
import pysptk
import pyworld

FRAME_PERIOD_MS = 5.0
MCEP_ORDER = 24


def _all_pass_constant(sample_rate: int) -> float:
    return {8000: 0.31, 16000: 0.42, 22050: 0.455, 24000: 0.466, 44100: 0.544,
            48000: 0.554}.get(sample_rate, 0.42)


def world_f0(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.ascontiguousarray(audio, dtype=np.float64)
    f0, times = pyworld.dio(audio, sample_rate, frame_period=FRAME_PERIOD_MS)
    return pyworld.stonemask(audio, f0, times, sample_rate)


def mel_cepstrum(audio: np.ndarray, sample_rate: int, order: int = MCEP_ORDER) -> np.ndarray:
    audio = np.ascontiguousarray(audio, dtype=np.float64)
    f0 = world_f0(audio, sample_rate)
    times = np.arange(len(f0)) * FRAME_PERIOD_MS / 1000.0
    envelope = pyworld.cheaptrick(audio, f0, times, sample_rate)
    return pysptk.sp2mc(envelope, order=order, alpha=_all_pass_constant(sample_rate))


def mel_cepstral_distortion(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """MCD in dB over c1..c24, averaged over frames (c0, the energy, excluded)."""
    mc_gen = mel_cepstrum(generated, sample_rate)
    mc_ref = mel_cepstrum(reference, sample_rate)
    frames = min(len(mc_gen), len(mc_ref))
    diff = mc_gen[:frames, 1:] - mc_ref[:frames, 1:]
    return float(np.mean(10.0 / math.log(10.0) * np.sqrt(2.0 * np.sum(diff ** 2, axis=1))))


def f0_errors(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> dict:
    """F0 RMSE in Hz over frames voiced in both (None when there is none), and the V/UV
    decision error rate."""
    f0_gen = world_f0(generated, sample_rate)
    f0_ref = world_f0(reference, sample_rate)
    frames = min(len(f0_gen), len(f0_ref))
    f0_gen, f0_ref = f0_gen[:frames], f0_ref[:frames]
    voiced_gen, voiced_ref = f0_gen > 0, f0_ref > 0
    both = voiced_gen & voiced_ref
    rmse = float(np.sqrt(np.mean((f0_gen[both] - f0_ref[both]) ** 2))) if both.any() else None
    return {"f0_rmse_hz": rmse, "vuv_error": float(np.mean(voiced_gen != voiced_ref))}


def speech_metrics(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> dict:
    metrics = {"mcd_db": mel_cepstral_distortion(generated, reference, sample_rate)}
    metrics.update(f0_errors(generated, reference, sample_rate))
    return metrics

"""Source-filter inputs for a neural vocoder: linear prediction and a harmonic source.

SampleRNN as a vocoder (acoustic conditioning) learns slowly when it must
discover, sample by sample, both the vocal-tract resonances and the periodic
glottal excitation. Two classical pieces of speech coding take both off its
hands, as LPCNet (Valin and Skoglund, 2019) and the neural source-filter
models (Wang, Takaki and Yamagishi, 2019) do:

- Linear prediction. The mel-cepstrum of every frame gives the spectral
  envelope; its autocorrelation gives, by the Levinson-Durbin recursion, the
  all-pole predictor ``x_hat[t] = sum_k c_k x[t - k]``. The network then
  models the prediction residual ``x[t] - x_hat[t]``, a far whiter signal, and
  the resonances come from the predictor.
- A harmonic source. From log-F0 and the voiced flag, a band-limited pulse
  train ``sum_k cos(k phi[t])`` over the harmonics below Nyquist, zero where
  unvoiced: the network learns how much of it to let through. At synthesis
  every harmonic starts in phase (one pulse a period); in training each
  harmonic takes the phase it has in the recording's own residual, so that
  the source is the harmonic part of what the network must predict.

Everything here is numpy, per utterance, from un-normalized WORLD features
(features.py's layout: lf0, vuv, mcep0..mcepN, bap).
"""

import numpy as np

ENVELOPE_FFT = 512           # FFT size of the envelope whose autocorrelation gives the predictor
WHITE_NOISE_CORRECTION = 1e-4  # r[0] *= 1 + this: keeps the predictor stable on near-singular frames
ALIGNMENT_WINDOW = 401       # Hann window (samples) of the low-pass that measures the fundamental's phase


def levinson(autocorrelation: np.ndarray, order: int) -> np.ndarray:
    """Prediction coefficients c (frames, order) of the autocorrelations r (frames, >= order + 1):
    the solution of the Toeplitz normal equations sum_k c_k r[|i - k|] = r[i], i = 1..order,
    by the Levinson-Durbin recursion, every frame at once."""
    r = np.asarray(autocorrelation, dtype=np.float64)
    frames = r.shape[0]
    a = np.zeros((frames, order + 1))       # the inverse filter A(z) = 1 + a1 z^-1 + ...
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for i in range(1, order + 1):
        reflection = -(r[:, i] + np.einsum("fk,fk->f", a[:, 1:i], r[:, i - 1:0:-1])) / error
        a[:, 1:i] = a[:, 1:i] + reflection[:, None] * a[:, i - 1:0:-1]
        a[:, i] = reflection
        error = error * (1.0 - reflection ** 2)
    return -a[:, 1:]


def predictor_from_mel_cepstrum(mcep: np.ndarray, alpha: float, order: int) -> np.ndarray:
    """(frames, order) float32 prediction coefficients of each frame's spectral envelope:
    the power envelope of the mel-cepstrum (pysptk.mc2sp, the inverse of the extraction),
    its autocorrelation (inverse FFT), Levinson-Durbin."""
    import pysptk

    power = pysptk.mc2sp(np.ascontiguousarray(mcep, dtype=np.float64), alpha, ENVELOPE_FFT)
    autocorrelation = np.fft.irfft(power, axis=-1)[:, :order + 1]
    autocorrelation[:, 0] *= 1.0 + WHITE_NOISE_CORRECTION
    return levinson(autocorrelation, order).astype(np.float32)


def predict(values: np.ndarray, coefficients: np.ndarray, hop_length: int) -> np.ndarray:
    """The prediction sum_k c_k x[t - k] of every sample of ``values`` (T,), with the coefficients
    (frames, order) of the frame the sample falls in (sample t: frame t // hop_length) and
    silence before the first sample."""
    values = np.asarray(values, dtype=np.float64)
    length, order = len(values), coefficients.shape[1]
    padded = np.concatenate([np.zeros(order), values])
    lags = np.stack([padded[order - k:order - k + length] for k in range(1, order + 1)], axis=1)
    per_sample = np.repeat(np.asarray(coefficients, np.float64), hop_length, axis=0)[:length]
    return np.einsum("tk,tk->t", lags, per_sample)


def sample_f0(lf0: np.ndarray, voiced: np.ndarray, hop_length: int) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz) and the voiced flag of every sample: log-F0 interpolated linearly between frame
    centres (frame t at sample t * hop_length), voicing from the nearer frame."""
    frames = len(lf0)
    positions = np.arange(frames * hop_length)
    centres = np.arange(frames) * hop_length
    f0 = np.exp(np.interp(positions, centres, lf0))
    flags = np.interp(positions, centres, np.asarray(voiced, np.float64)) > 0.5
    return f0, flags


def harmonic_source(lf0: np.ndarray, voiced: np.ndarray, hop_length: int, sample_rate: int,
                    align_to: np.ndarray | None = None, phase: float = 0.0) -> np.ndarray:
    """(frames * hop_length,) float32 band-limited pulse train at F0, zero where unvoiced.

    Sample t is ``sum_{k: k f0 < sr / 2} cos(k phi[t] + d_k[t]) / K(t)``, where phi
    integrates 2 pi f0 / sample_rate from ``phase`` and K(t) counts the harmonics below
    Nyquist. Without ``align_to`` every d_k is 0: pulses of height 1 once a period.
    ``align_to`` (a signal of the same length; in training the recording's prediction
    residual) gives each harmonic the phase it has in that signal: heterodyned by
    exp(-i k phi) and low-passed (Hann window of ALIGNMENT_WINDOW samples), the signal's
    k-th harmonic is left near 0 Hz, and its angle is d_k.
    """
    from scipy.signal import fftconvolve

    f0, flags = sample_f0(lf0, voiced, hop_length)
    phi = phase + 2 * np.pi * np.cumsum(f0 / sample_rate)
    harmonics = np.floor(sample_rate / 2 / f0)          # K(t): harmonics below Nyquist
    window = np.hanning(ALIGNMENT_WINDOW)
    pulses = np.zeros(len(phi))
    for k in range(1, int(harmonics.max()) + 1):
        angle = k * phi
        if align_to is not None:
            baseband = np.asarray(align_to, np.float64)[:len(phi)] * np.exp(-1j * angle)
            angle = angle + np.angle(fftconvolve(baseband, window, mode="same"))
        pulses += np.where(k <= harmonics, np.cos(angle), 0.0)
    return (flags * pulses / np.maximum(harmonics, 1.0)).astype(np.float32)

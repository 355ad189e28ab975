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
- A harmonic source. From log-F0 and the voiced flag, the harmonics of F0
  below Nyquist, zero where unvoiced. Its periodic part joins the prediction,
  so that the network models what is left, the aperiodic part: at synthesis
  every harmonic has the same amplitude, which gives the frame the periodic
  power that the envelope's prediction error and the aperiodicity say it has,
  and a fixed random phase (`synthesis_phases`); in training each harmonic has the
  amplitude and phase it has in the recording's own residual. The network
  also sees the unit pulse train around each sample.
- A gain. The envelope's prediction error power times the aperiodic share that
  WORLD's band aperiodicity gives is the power the aperiodic part should have in
  each frame (`excitation_scale`); with it the network draws that part at one
  scale in every frame, and the features, not the network, set its level.

Everything here is numpy, per utterance, from un-normalized WORLD features
(features.py's layout: lf0, vuv, mcep0..mcepN, bap).
"""

import numpy as np
import torch

ENVELOPE_FFT = 512           # FFT size of the envelope whose autocorrelation gives the predictor
WHITE_NOISE_CORRECTION = 1e-4  # r[0] *= 1 + this: keeps the predictor stable on near-singular frames
ALIGNMENT_PERIODS = 2.5      # Hann window of the low-pass that measures each harmonic, in periods
SYNTHESIS_PHASE_SEED = 0     # the fixed random phase of each harmonic at synthesis
EXCITATION_RMS = 0.1         # `excitation_scale`: a frame's expected excitation is coded at this RMS
EXCITATION_FLOOR = 1e-5      # ... and a frame with less expected power than this RMS at this one


def synthesis_phases(count: int = 1000) -> np.ndarray:
    """The phase of each harmonic at synthesis: fixed, uniformly random. In phase (zero), the
    harmonics would add to a pulse sqrt(2 K) times the excitation's RMS (about 13 at 100 Hz),
    which the all-pole predictor turns into samples beyond full scale; spread, they peak at a
    few times the RMS, as a recording's residual does."""
    return np.random.default_rng(SYNTHESIS_PHASE_SEED).uniform(-np.pi, np.pi, count)


def levinson(autocorrelation: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction coefficients c (frames, order) of the autocorrelations r (frames, >= order + 1):
    the solution of the Toeplitz normal equations sum_k c_k r[|i - k|] = r[i], i = 1..order,
    by the Levinson-Durbin recursion, every frame at once; and the power of the prediction
    error, r[0] - sum_k c_k r[k] (frames,)."""
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
    return -a[:, 1:], error


def predictor_from_mel_cepstrum(mcep: np.ndarray, alpha: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames, order) float32 prediction coefficients of each frame's spectral envelope and
    (frames,) the power of its prediction error: the power envelope of the mel-cepstrum
    (pysptk.mc2sp, the inverse of the extraction), its autocorrelation (inverse FFT),
    Levinson-Durbin. WORLD's envelope is on the scale of the signal's power, so the error
    power is that of the recording's residual (within a few dB on the demo corpus)."""
    import pysptk

    power = pysptk.mc2sp(np.ascontiguousarray(mcep, dtype=np.float64), alpha, ENVELOPE_FFT)
    autocorrelation = np.fft.irfft(power, axis=-1)[:, :order + 1]
    autocorrelation[:, 0] *= 1.0 + WHITE_NOISE_CORRECTION
    coefficients, error = levinson(autocorrelation, order)
    return coefficients.astype(np.float32), np.maximum(error, 0.0)


def envelope_gain(mcep: np.ndarray, alpha: float, coefficients: np.ndarray, error: np.ndarray) -> np.ndarray:
    """(frames, ENVELOPE_FFT // 2 + 1) float32: the amplitude by which each frame's envelope
    (the mel-cepstrum's, pysptk.mc2sp) exceeds its all-pole model, sqrt(S / S_lpc) with
    S_lpc = error / |A(e^iw)|^2, on a linear axis from 0 Hz to Nyquist. A source whose
    harmonics have these amplitudes (relative to flat ones) comes out of 1 / A(z) with the
    mel-cepstrum's envelope at every harmonic, not the predictor's smoother one; the
    predictor's order alone cannot follow what the warped cepstrum resolves at low
    frequencies (bench/lpc_envelope.py: 8.3 dB at order 16 on voiced frames). 1 where the
    frame has no power."""
    import pysptk

    power = pysptk.mc2sp(np.ascontiguousarray(mcep, dtype=np.float64), alpha, ENVELOPE_FFT)
    inverse = np.fft.rfft(np.concatenate([np.ones((len(coefficients), 1)), -np.asarray(coefficients, np.float64)],
                                         axis=1), ENVELOPE_FFT, axis=1)
    model = np.asarray(error, np.float64)[:, None] / np.maximum(np.abs(inverse) ** 2, 1e-300)
    gain = np.ones_like(power)
    np.sqrt(power / model, out=gain, where=model > 0)
    return gain.astype(np.float32)


def linear_prediction(history: torch.Tensor, coefficients: torch.Tensor, hop_length: int) -> torch.Tensor:
    """``sum_k c_k x[t - k]`` for every sample of ``history`` (..., order + T) after its first
    ``order``, with the coefficients (..., frames, order) of the frame the predicted sample falls
    in (its t // hop_length). SampleRNN's training (the codes' look-back frame before) and the
    data source (silence before) both predict through it."""
    order = coefficients.shape[-1]
    length = history.shape[-1] - order
    lags = history[..., :-1].unfold(-1, order, 1).flip(-1)            # (..., T, order): x[t-1] .. x[t-order]
    per_sample = coefficients.repeat_interleave(hop_length, dim=-2)[..., :length, :]
    return predictor_sum(lags, per_sample)


def predictor_sum(lags: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """The prediction ``sum_k c_k x[t - k]`` from the lags (..., order) and the coefficients
    (..., order) given in the same order: `linear_prediction` for every sample at once, and
    SampleRNN's generation for one sample at a time (oldest lag first, coefficients reversed)."""
    return (lags * coefficients).sum(-1)


def predict(values: np.ndarray, coefficients: np.ndarray, hop_length: int) -> np.ndarray:
    """`linear_prediction` of every sample of ``values`` (T,), numpy, silence before the first."""
    order = coefficients.shape[1]
    history = np.concatenate([np.zeros(order), np.asarray(values, dtype=np.float64)])
    return linear_prediction(torch.from_numpy(history), torch.from_numpy(np.asarray(coefficients, np.float64)),
                             hop_length).numpy()


def alignment_window(f0: np.ndarray, voiced: np.ndarray, sample_rate: int) -> np.ndarray:
    """The low-pass of the harmonic measurement: a Hann window of ALIGNMENT_PERIODS periods of
    the median voiced F0 (odd length), scaled to unit gain at 0 Hz for a cosine's complex
    envelope (sum 2). Its main lobe is 2 / 2.5 F0 wide on each side: narrow enough that a
    neighbouring harmonic is well down, wide enough to follow each harmonic's phase as the
    voice and the F0 estimate move. A fixed length fits only one pitch: 401 samples (25 ms)
    is 2.3 periods of a 90 Hz voice but 4.9 of a 196 Hz one, whose upper harmonics then drift
    out of the band; on the demo recordings the periodic-to-rest ratio of the voiced
    residual rises from 5-10 dB to 13-18 dB for the female voices with this window."""
    f0 = np.asarray(f0, np.float64)[np.asarray(voiced, bool)]
    median = float(np.median(f0)) if len(f0) else 100.0
    length = int(round(ALIGNMENT_PERIODS * sample_rate / median)) | 1
    window = np.hanning(length)
    return window * (2.0 / window.sum())


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
                    align_to: np.ndarray | None = None, power: np.ndarray | None = None,
                    harmonic_phases: np.ndarray | None = None,
                    gain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The harmonics of F0 below Nyquist, zero where unvoiced: (pulses, harmonic), float32
    (frames * hop_length,) each.

    ``pulses`` is ``sum_{k <= K(t)} cos(k phi[t] + d_k[t]) / K(t)``, phi integrating
    2 pi f0 / sample_rate from 0 and K(t) counting the harmonics below Nyquist.
    ``harmonic`` is an estimate of the periodic part of a signal, or None:

    - ``align_to`` (a signal of the same length; in training the recording's prediction
      residual): each harmonic takes its phase d_k and amplitude a_k in that signal,
      measured by heterodyning (times exp(-i k phi), low-passed by `alignment_window`,
      which leaves the k-th harmonic near 0 Hz);
      harmonic = sum_k a_k cos(k phi + d_k).
    - else d_k is ``harmonic_phases[k - 1]``, or 0 (pulses of height 1 once a period),
      and, with ``power`` (the periodic power of every frame, (frames,)), every harmonic
      gets the same amplitude, sqrt(2 power / K): harmonic = sum_k a cos(k phi + d_k),
      whose power is ``power``; with ``gain`` too ((frames, bins) over 0 Hz to Nyquist,
      `envelope_gain`), harmonic k's amplitude is a times the gain of its frame at k f0
      (interpolated between bins), as the recording's residual has it in training.
    """
    from scipy.signal import oaconvolve

    f0, flags = sample_f0(lf0, voiced, hop_length)
    phi = 2 * np.pi * np.cumsum(f0 / sample_rate)
    harmonics = np.ceil(sample_rate / 2 / f0) - 1.0      # K(t): harmonics strictly below Nyquist
    window = alignment_window(f0, flags, sample_rate)
    signal = None if align_to is None else np.asarray(align_to, np.float64)[:len(phi)]
    step = np.exp(-1j * phi)
    carrier = np.ones(len(phi), complex)                  # exp(-i k phi), one harmonic further each time
    pulses = np.zeros(len(phi))
    measured = np.zeros(len(phi)) if signal is not None else None
    shaped = np.zeros(len(phi)) if signal is None and power is not None and gain is not None else None
    if shaped is not None:
        gain = np.asarray(gain, np.float64)
        top_bin = gain.shape[1] - 1
        frame_of_sample = np.arange(len(phi)) // hop_length     # each sample reads its frame's row
    # unvoiced stretches (whose interpolated F0 can sit far below the voiced one) count no harmonics
    top = int(harmonics[flags].max()) if flags.any() else 0
    phases = np.zeros(top) if harmonic_phases is None else np.asarray(harmonic_phases)[:top]
    for k in range(1, top + 1):
        carrier *= step
        below = k <= harmonics
        if signal is not None:
            baseband = oaconvolve(signal * carrier, window, mode="same")     # a_k exp(i d_k)
            rotated = baseband * np.conj(carrier)                             # a_k exp(i (k phi + d_k))
            measured += np.where(below, rotated.real, 0.0)
            unit = rotated.real / np.maximum(np.abs(baseband), 1e-12)
        else:
            unit = (np.exp(1j * phases[k - 1]) * np.conj(carrier)).real
        pulses += np.where(below, unit, 0.0)
        if shaped is not None:
            position = np.minimum(k * f0 / (sample_rate / 2) * top_bin, top_bin)
            lower = np.minimum(position.astype(np.int64), top_bin - 1)
            fraction = position - lower
            at = (1 - fraction) * gain[frame_of_sample, lower] + fraction * gain[frame_of_sample, lower + 1]
            shaped += np.where(below, at * unit, 0.0)
    count = np.maximum(harmonics, 1.0)
    harmonic = None
    if measured is not None:
        harmonic = flags * measured
    elif power is not None:
        per_sample = np.repeat(np.asarray(power, np.float64), hop_length)[:len(phi)]
        harmonic = flags * (pulses if shaped is None else shaped) * np.sqrt(2.0 * per_sample / count)
    pulses = (flags * pulses / count).astype(np.float32)
    return pulses, None if harmonic is None else harmonic.astype(np.float32)


def highpass_step(x, previous_x, previous_y, pole):
    """One sample of the first-order high-pass y[t] = x[t] - x[t - 1] + pole * y[t - 1], i.e.
    (1 - z^-1) / (1 - pole z^-1): zero gain at 0 Hz, -3 dB near (1 - pole) * sample_rate / (2 pi).
    SampleRNN's generation shapes the sampled residual with it (`model.residual_highpass`)."""
    return x - previous_x + pole * previous_y


def excitation_scale(aperiodic_power: np.ndarray) -> np.ndarray:
    """(frames,) float32: by how much SampleRNN divides each frame's aperiodic excitation before
    coding it in mu-law (`model.excitation_gain`), its expected RMS (the square root of the
    frame's ``aperiodic_power``: the envelope's prediction error power times the aperiodic
    share that WORLD's band aperiodicity gives) over EXCITATION_RMS, so that every frame's
    excitation is coded near that RMS whatever its loudness, with headroom for 20 dB more
    before mu-law's full scale. Below EXCITATION_FLOOR (silence; -100 dB of full scale) the
    floor's scale."""
    rms = np.sqrt(np.maximum(np.asarray(aperiodic_power, np.float64), EXCITATION_FLOOR ** 2))
    return (rms / EXCITATION_RMS).astype(np.float32)


def periodic_fraction(band_aperiodicity_db: np.ndarray) -> np.ndarray:
    """The share of a frame's power that is periodic, 1 - ap^2, from WORLD's band
    aperiodicity in dB (20 log10 ap), clipped to [0, 1]."""
    return np.clip(1.0 - 10.0 ** (np.asarray(band_aperiodicity_db, np.float64) / 10.0), 0.0, 1.0)

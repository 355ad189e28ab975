"""audio/excitation.py against independent solvers and closed forms, and on the demo corpus."""

import numpy as np
import scipy.linalg
import scipy.signal

from samplernn_pase.audio.excitation import (EXCITATION_RMS, envelope_gain, excitation_scale, harmonic_source,
                                             levinson, periodic_fraction, predict, predictor_from_mel_cepstrum)
from samplernn_pase.audio.mulaw import mulaw_decode, mulaw_encode
from samplernn_pase.data.features import acoustic_features, acoustic_fields, feature_params, mel_cepstrum

RATE, HOP = 16000, 80


def demo_feature_params():
    """The feature extraction's parameters with the demo's data settings (16 kHz, hop 80)."""
    return feature_params({"sample_rate": RATE, "hop_length": HOP, "mcep_alpha": None, "f0_method": "dio",
                           "f0_floor": 50, "f0_ceil": 600, "mcep_order": 39, "min_seconds": 0.25,
                           "label_tolerance_seconds": 0.1})


def test_levinson_solves_the_toeplitz_normal_equations():
    rng = np.random.default_rng(0)
    signals = scipy.signal.lfilter([1.0], [1.0, -1.2, 0.5], rng.standard_normal((5, 4000)), axis=1)
    r = np.stack([np.correlate(s, s, "full")[len(s) - 1:len(s) + 12] for s in signals])
    for order in (1, 4, 12):
        ours, error = levinson(r, order)
        for row, row_error, expected_r in zip(ours, error, r):
            expected = scipy.linalg.solve_toeplitz(expected_r[:order], expected_r[1:order + 1])
            np.testing.assert_allclose(row, expected, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(row_error, expected_r[0] - expected @ expected_r[1:order + 1], rtol=1e-8)


def test_predictor_of_a_known_all_pole_envelope():
    """The mel-cepstrum of the power spectrum 1 / |A(e^jw)|^2 of a known AR(2) filter, taken
    as the extraction takes it, gives back that filter's prediction coefficients."""
    alpha = demo_feature_params()["mcep_alpha"]
    coefficients = np.array([1.3, -0.8])                 # poles at radius 0.89
    _, response = scipy.signal.freqz([1.0], [1.0, *-coefficients], worN=513, whole=False)
    power = np.abs(response[None]) ** 2
    mcep = mel_cepstrum(power, 39, alpha)
    ours, error = predictor_from_mel_cepstrum(mcep, alpha, 2)
    np.testing.assert_allclose(ours[0], coefficients, atol=0.02)
    # the filter is driven by unit-variance white noise: the prediction error's power is 1
    # (the mean of the power spectrum |1 / A|^2 is the AR process's variance)
    variance = np.mean(np.abs(scipy.signal.freqz([1.0], [1.0, *-coefficients], worN=4096, whole=True)[1]) ** 2)
    np.testing.assert_allclose(error[0] * variance / np.fft.irfft(power[0])[0], 1.0, rtol=0.05)
    higher = predictor_from_mel_cepstrum(mcep, alpha, 6)[0][0]
    np.testing.assert_allclose(higher[:2], coefficients, atol=0.02)
    assert np.abs(higher[2:]).max() < 0.02                # an AR(2) needs no more


def test_prediction_is_the_inverse_filter():
    """x - predict(x) is scipy's FIR filter A(z) = 1 - sum c_k z^-k, frame by frame."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3 * HOP)
    coefficients = rng.normal(0, 0.3, (3, 4))
    residual = x - predict(x, coefficients, HOP)
    for frame in range(3):
        whole = scipy.signal.lfilter(np.concatenate([[1.0], -coefficients[frame]]), [1.0], x)
        np.testing.assert_allclose(residual[frame * HOP:(frame + 1) * HOP], whole[frame * HOP:(frame + 1) * HOP],
                                   atol=1e-12)


def test_harmonic_source_is_a_band_limited_pulse_train():
    frames, f0 = 100, 200.0
    lf0 = np.full(frames, np.log(f0))
    voiced = np.ones(frames)
    voiced[60:] = 0
    source, harmonic = harmonic_source(lf0, voiced, HOP, RATE)
    assert harmonic is None and source.shape == (frames * HOP,)
    assert np.all(source[61 * HOP:] == 0)                            # unvoiced
    period = int(RATE / f0)                                         # 80 samples
    pulses = source[:50 * HOP].reshape(-1, period)
    # phi reaches 2 pi m at the last sample of each period: height 1 there, once a period
    np.testing.assert_allclose(pulses[:, -1], 1.0, atol=1e-6)
    assert np.all(pulses[:, :-3] < 0.5)
    spectrum = np.abs(np.fft.rfft(source[:50 * HOP]))
    bins = np.fft.rfftfreq(50 * HOP, 1 / RATE)
    harmonics = spectrum[np.isin(bins, f0 * np.arange(1, 40))]
    assert len(harmonics) == 39 and harmonics.min() > 100 * np.median(spectrum)


def test_aligned_source_takes_each_harmonic_phase_of_the_signal():
    frames, f0 = 120, 150.0
    lf0, voiced = np.full(frames, np.log(f0)), np.ones(frames)
    t = np.arange(frames * HOP)
    rng = np.random.default_rng(2)
    phases = rng.uniform(-np.pi, np.pi, 53)                       # 53 harmonics below 8 kHz
    signal = sum(rng.uniform(0.2, 1.0) * np.cos(2 * np.pi * k * f0 * (t + 1) / RATE + phases[k - 1])
                 for k in range(1, 54))
    noise = 0.3 * rng.standard_normal(len(t))
    aligned, periodic = harmonic_source(lf0, voiced, HOP, RATE, align_to=signal + noise)
    free, _ = harmonic_source(lf0, voiced, HOP, RATE)
    middle = slice(1000, len(t) - 1000)                           # away from the window's edges
    assert np.corrcoef(aligned[middle], signal[middle])[0, 1] > 0.9
    assert abs(np.corrcoef(free[middle], signal[middle])[0, 1]) < 0.3
    # the measured periodic part is the signal without the noise
    error = np.sum((periodic[middle] - signal[middle]) ** 2) / np.sum(signal[middle] ** 2)
    assert error < 0.05, error


def test_periodic_part_has_the_asked_power():
    frames, f0 = 100, 100.0                      # a period is 160 samples: two frames
    power = np.linspace(1e-4, 4e-4, frames)
    _, periodic = harmonic_source(np.full(frames, np.log(f0)), np.ones(frames), HOP, RATE, power=power)
    measured = (periodic.astype(np.float64).reshape(frames // 2, 2 * HOP) ** 2).mean(1)
    np.testing.assert_allclose(measured[1:], power.reshape(-1, 2).mean(1)[1:], rtol=0.05)


def test_shaped_harmonics_come_out_of_the_predictor_with_the_envelope():
    """`model.harmonic_envelope`: a steady voiced stretch whose envelope (an AR(10) with five
    resonances, as its mel-cepstrum gives it) is more detailed than the order-4 predictor
    can follow. Through scipy's 1 / A(z), the harmonic source has at each of the 56 harmonics
    of 125 Hz the mel-cepstrum's envelope (pysptk.mc2sp) within 0.1 dB (RMS, after the best
    common scale) with `envelope_gain`'s amplitudes; with equal amplitudes it has the
    predictor's smoother one, several dB off."""
    import pysptk

    alpha = 0.41
    frames, f0 = 200, 125.0                       # 128 samples a period: 64 periods in 8192
    poles = [(0.97, 500), (0.96, 1500), (0.95, 2500), (0.93, 3500), (0.9, 5000)]
    a = np.array([1.0])
    for radius, frequency in poles:
        w = 2 * np.pi * frequency / RATE
        a = np.convolve(a, [1.0, -2 * radius * np.cos(w), radius ** 2])
    _, response = scipy.signal.freqz([1.0], a, worN=513)
    mcep = np.repeat(mel_cepstrum(np.abs(response[None]) ** 2, 39, alpha), frames, axis=0)
    coefficients, error = predictor_from_mel_cepstrum(mcep, alpha, 4)
    gain = envelope_gain(mcep, alpha, coefficients, error)
    assert gain.shape == (frames, 257)
    harmonics = f0 * np.arange(1, 57)
    envelope = pysptk.mc2sp(mcep[:1].astype(np.float64), alpha, 512)[0]
    envelope_db = 10 * np.log10(np.interp(harmonics, np.linspace(0, RATE / 2, 257), envelope))
    lf0, voiced = np.full(frames, np.log(f0)), np.ones(frames)
    inverse = np.concatenate([[1.0], -coefficients[0].astype(np.float64)])
    errors = {}
    for name, shaping in (("shaped", gain), ("flat", None)):
        _, periodic = harmonic_source(lf0, voiced, HOP, RATE, power=error, gain=shaping,
                                      harmonic_phases=np.zeros(100))
        out = scipy.signal.lfilter([1.0], inverse, periodic.astype(np.float64))[-8192:]   # steady
        spectrum = np.abs(np.fft.rfft(out))
        difference = 20 * np.log10(spectrum[(harmonics * len(out) / RATE).astype(int)]) - envelope_db
        errors[name] = np.sqrt(np.mean((difference - difference.mean()) ** 2))
    assert errors["shaped"] < 0.1 and errors["flat"] > 3.0, errors


def test_envelope_gain_is_one_where_the_predictor_holds_the_envelope():
    """An AR(2) envelope fitted at order 6 needs no correction: the gain is 1 within 5 %."""
    alpha = 0.41
    _, response = scipy.signal.freqz([1.0], [1.0, -1.3, 0.8], worN=513)
    mcep = mel_cepstrum(np.abs(response[None]) ** 2, 39, alpha)
    coefficients, error = predictor_from_mel_cepstrum(mcep, alpha, 6)
    np.testing.assert_allclose(envelope_gain(mcep, alpha, coefficients, error), 1.0, atol=0.05)


def test_excitation_scale_is_the_innovation_of_a_known_noise_process():
    """`model.excitation_gain`'s scale, from the features alone: white Gaussian noise of a known
    standard deviation through a known all-pole filter (scipy), analysed by the project's
    WORLD extraction. The process's innovation is that noise, so the expected RMS the scale
    stands for (the predictor's error power times the aperiodic share) must be its standard
    deviation, at two levels 28 dB apart; DIO finds almost no voicing in it, and WORLD's
    aperiodicity gives the frames an aperiodic share of 1."""
    params = demo_feature_params()
    fields = acoustic_fields(39)
    rng = np.random.default_rng(0)
    for sigma in (0.002, 0.05):
        noise = scipy.signal.lfilter([1.0], [1.0, -1.3, 0.8], sigma * rng.standard_normal(2 * RATE))
        acoustic = acoustic_features(noise.astype(np.float32), params).astype(np.float64)
        assert acoustic[:, fields.index("vuv")].mean() < 0.15
        _, error = predictor_from_mel_cepstrum(acoustic[:, fields.index("mcep0"):fields.index("bap")],
                                               params["mcep_alpha"], 16)
        share = 1.0 - periodic_fraction(acoustic[:, fields.index("bap")])
        assert np.median(share) > 0.99
        level_db = 20 * np.log10(excitation_scale(error * share) * EXCITATION_RMS / sigma)
        assert abs(np.median(level_db)) < 2.0, np.median(level_db)          # measured: -1.1 dB at both
        assert np.percentile(np.abs(level_db), 90) < 4.0


def test_periodic_fraction_of_the_aperiodicity():
    np.testing.assert_allclose(periodic_fraction(np.array([0.0, -10.0, -20.0, 3.0])), [0.0, 0.9, 0.99, 0.0])


def test_predictor_from_the_features_predicts_the_recording(demo_prepared):
    """On real demo recordings the predictor from the cached mel-cepstrum takes out most of
    the signal: a prediction gain above 10 dB (a wrong envelope or sign gives about 0)."""
    from samplernn_pase.data.cache import load_entry

    index, _, data_path = demo_prepared
    fields = index["acoustic_fields"]
    alpha = index["feature_params"]["mcep_alpha"]
    for entry in index["utterances"][:3]:
        arrays = load_entry(data_path, entry["features"])
        mcep = arrays["acoustic"][:, fields.index("mcep0"):fields.index("bap")]
        values = mulaw_decode(mulaw_encode(arrays["audio"]))
        residual = values - predict(values, predictor_from_mel_cepstrum(mcep, alpha, 16)[0], HOP)
        gain = 10 * np.log10(np.sum(values.astype(np.float64) ** 2) / np.sum(residual ** 2))
        assert gain > 10, (entry["id"], gain)


def test_the_source_filter_prior_alone_speaks_with_the_recordings_pitch(demo_prepared):
    """No network: the harmonic source of the features (free phases, periodic power from the
    envelope and aperiodicity) through the all-pole predictor of the features. WORLD's F0
    analysis of that signal must find the recording's voicing and pitch: this is what the
    demo vocoder starts from before it has learned anything. With the harmonics shaped by
    `envelope_gain` (`model.harmonic_envelope`) its mel-cepstral distortion against the
    recording (metrics/speech.py, WORLD's analysis of both) is lower by more than 1 dB."""
    from samplernn_pase.audio.excitation import synthesis_phases
    from samplernn_pase.audio.world import world_f0
    from samplernn_pase.data.cache import load_entry
    from samplernn_pase.metrics.speech import speech_metrics

    index, _, data_path = demo_prepared
    params = index["feature_params"]
    fields = index["acoustic_fields"]
    entry = index["utterances"][0]
    acoustic = load_entry(data_path, entry["features"])["acoustic"].astype(np.float64)
    audio = load_entry(data_path, entry["features"])["audio"]
    mcep = acoustic[:, fields.index("mcep0"):fields.index("bap")]
    coefficients, error_power = predictor_from_mel_cepstrum(mcep, params["mcep_alpha"], 16)

    def render(gain=None):
        _, periodic = harmonic_source(acoustic[:, 0], acoustic[:, 1], HOP, RATE,
                                      power=error_power * periodic_fraction(acoustic[:, -1]),
                                      harmonic_phases=synthesis_phases(), gain=gain)
        output, state = [], np.zeros(16)
        for frame, excitation in zip(coefficients.astype(np.float64), periodic.reshape(-1, HOP)):
            filtered, state = scipy.signal.lfilter([1.0], [1.0, *-frame], excitation, zi=state)
            output.append(filtered)
        output = np.concatenate(output)
        assert np.all(np.isfinite(output)) and np.abs(output).max() < 1.0
        return output

    output = render()
    shaped = render(envelope_gain(mcep, params["mcep_alpha"], coefficients, error_power))
    flat_mcd = speech_metrics(output, audio, params)["mcd_db"]
    shaped_mcd = speech_metrics(shaped, audio, params)["mcd_db"]
    assert shaped_mcd < flat_mcd - 1.0, (shaped_mcd, flat_mcd)

    def f0(signal):
        return world_f0(signal, RATE, HOP, params["f0_floor"], params["f0_ceil"], params["f0_method"])[0]

    real, rendered = f0(audio), f0(output)
    both = (real > 0) & (rendered > 0)
    assert np.mean((real > 0) == (rendered > 0)) > 0.85                 # voicing agrees
    assert np.median(np.abs(rendered[both] / real[both] - 1)) < 0.03    # pitch within 3 %

"""bench/lpc_envelope.py: the MCD between a frame's mel-cepstrum and its order-p all-pole fit,
checked on envelopes whose all-pole order is known: an envelope made by an order-8 filter is
fitted at order 8 as well as at order 24 (nothing is left for more poles), and not at order 2."""
import importlib.util
from pathlib import Path

import numpy as np

SPEC = importlib.util.spec_from_file_location(
    "lpc_envelope", Path(__file__).resolve().parents[1] / "bench" / "lpc_envelope.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

ALPHA, MCEP_ORDER, FFT = 0.41, 39, 1024
RADII = (0.5, 0.7)


def all_pole_mel_cepstra(frames: int, seed: int = 0) -> np.ndarray:
    """Mel-cepstra (frames, 40) of power spectra 1 / |A(e^jw)|^2 with A of order 8: four
    resonances at random frequencies, pole radii 0.5-0.7 (a dynamic range the
    predictor's white-noise correction, 1e-4 of the power, does not fill)."""
    import pysptk
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        polynomial = np.array([1.0])
        for frequency, radius in zip(np.sort(rng.uniform(0.05, 0.9, 4)) * np.pi, rng.uniform(RADII[0], RADII[1], 4)):
            polynomial = np.convolve(polynomial, [1.0, -2 * radius * np.cos(frequency), radius ** 2])
        power = 1.0 / np.abs(np.fft.rfft(polynomial, FFT)) ** 2
        out.append(pysptk.sp2mc(power, MCEP_ORDER, ALPHA))
    return np.array(out)


def test_an_order_8_envelope_is_fitted_at_order_8_and_not_at_order_2():
    mcep = all_pole_mel_cepstra(6)
    exact, high, low = (bench.envelope_distortion(mcep, ALPHA, order).mean() for order in (8, 24, 2))
    assert exact < 0.6                     # dB
    assert abs(high - exact) < 0.05        # the true order: more poles find nothing more
    assert low > 3.0                       # two poles cannot place four resonances

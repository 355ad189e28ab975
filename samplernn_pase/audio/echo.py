"""A speaker's echo: one delayed reflection of its recordings, found and put back.

Some voices come with their room: a reflection a tenth of a second or more
behind the direct sound (eSpeak NG's f2, f3, f4 and m2 variants add one, 120-140
ms; a hall or a badly placed microphone does the same to a real voice). A
speaker encoder hears it: Resemblyzer tells demo_f2 from demo_f1 partly by it
(README, "The speaker's echo"). Frame-wise features cannot carry it: a WORLD
frame is 5 ms and its analysis window about 30 ms, so text-to-speech from
predicted features comes out dry, and the acoustic family puts the echo back
on the waveform (`model.speaker_echo`).

The model is a feedback comb, y[n] = x[n] + gain * y[n - delay]: one reflection
of everything said, echoed again (as eSpeak's own echo buffer does); for the
small gains of a real reflection this is one echo.

Finding it in a speaker's recordings:
- the delay: the echo adds a peak at quefrency `delay` to the real cepstrum
  of a whole recording (log |1 + g e^-jwd| = g cos(wd) + ...; the cepstrum was
  first made to find echoes, Bogert, Healy and Tukey 1963). Averaged over
  the speaker's recordings, the peak stands out of the speech's own cepstrum,
  which has no structure there; it counts only when it is `DETECTION_Z` robust
  standard deviations above the median of the searched range, and only from
  MIN_DELAY_SECONDS (closer reflections are the room's colour, which the
  spectral envelope already holds);
- the gain, given the delay: the recordings' pooled autocorrelation at that
  lag over their energy, sum y[n] y[n-d] / sum y[n-d]^2, which is `gain` for
  a feedback comb driven by a signal uncorrelated with itself that far apart.
"""

import numpy as np
from scipy.signal import lfilter

MIN_DELAY_SECONDS = 0.05
MAX_DELAY_SECONDS = 0.3
DETECTION_Z = 20.0        # dry voices reach 6-11 (the demo's, a CMU ARCTIC recording), echoed ones 30-45
MIN_GAIN = 0.01
MAX_GAIN = 0.5
FLOOR = 1e-3              # the log spectrum's floor, relative to its peak: silences and deep valleys


def real_cepstrum(audio: np.ndarray) -> np.ndarray:
    """Real cepstrum of a whole recording, zero-padded to at least twice its length (so that
    quefrencies up to its length do not wrap); index = quefrency in samples."""
    audio = np.asarray(audio, np.float64)
    size = 1 << int(np.ceil(np.log2(max(2, 2 * len(audio)))))
    magnitude = np.abs(np.fft.rfft(audio, size))
    return np.fft.irfft(np.log(magnitude + FLOOR * max(magnitude.max(), 1e-12)), size)


def estimate_echo(recordings: list[np.ndarray], sample_rate: int) -> tuple[int, float]:
    """(delay in samples, gain) of the echo common to a speaker's recordings; (0, 0.0) when
    there is none (no peak that stands out, or a gain under MIN_GAIN)."""
    low, high = int(MIN_DELAY_SECONDS * sample_rate), int(MAX_DELAY_SECONDS * sample_rate)
    usable = [np.asarray(r, np.float64) for r in recordings if len(r) > 2 * high]
    if not usable:
        return 0, 0.0
    cepstrum = np.mean([real_cepstrum(r)[low:high] for r in usable], axis=0)
    median = np.median(cepstrum)
    spread = 1.4826 * np.median(np.abs(cepstrum - median))
    peak = int(np.argmax(cepstrum))
    if spread <= 0 or (cepstrum[peak] - median) / spread < DETECTION_Z:
        return 0, 0.0
    delay = low + peak
    lagged = sum(float(np.dot(r[delay:], r[:-delay])) for r in usable)
    energy = sum(float(np.dot(r[:-delay], r[:-delay])) for r in usable)
    gain = lagged / energy if energy > 0 else 0.0
    if gain < MIN_GAIN:
        return 0, 0.0
    return delay, min(gain, MAX_GAIN)


def add_echo(audio: np.ndarray, delay: int, gain: float) -> np.ndarray:
    """The feedback comb y[n] = x[n] + gain * y[n - delay] over `audio` (its length kept);
    `audio` itself when there is no echo."""
    delay = int(delay)
    if delay <= 0 or gain == 0:
        return audio
    denominator = np.zeros(delay + 1)
    denominator[0], denominator[delay] = 1.0, -float(gain)
    return lfilter([1.0], denominator, np.asarray(audio, np.float64)).astype(np.asarray(audio).dtype)

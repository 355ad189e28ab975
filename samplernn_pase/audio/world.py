"""WORLD F0: the project's one F0 analysis.

The acoustic features (data/features.py), the objective metrics
(metrics/speech.py: F0 RMSE, V/UV error, the envelope behind MCD) and PASE's
prosody target (models/pase_targets.py) all call `world_f0`. Frame t is
centred on sample t * hop_length (WORLD's frame period is hop_length /
sample_rate), so N samples give N // hop_length + 1 frames.
"""

import numpy as np

F0_METHODS = ("dio", "harvest")


def world_f0(signal: np.ndarray, sample_rate: int, hop_length: int, f0_floor: float, f0_ceil: float,
             method: str) -> tuple[np.ndarray, np.ndarray]:
    """(F0 in Hz, 0 where unvoiced; frame times in s) of one utterance, a frame every hop_length samples.

    method: "dio" (DIO refined by StoneMask: fast) or "harvest" (more robust
    in noise and at voicing edges, about 10x slower). The estimator searches
    F0 between f0_floor and f0_ceil Hz.
    """
    import pyworld

    if method not in F0_METHODS:
        raise ValueError(f"F0 method {method!r} is not one of {F0_METHODS}")
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    frame_period = 1000.0 * hop_length / sample_rate
    if method == "harvest":
        return pyworld.harvest(signal, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period)
    f0, times = pyworld.dio(signal, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period)
    return pyworld.stonemask(signal, f0, times, sample_rate), times


def interpolated_log_f0(f0: np.ndarray) -> np.ndarray:
    """log F0 with unvoiced frames filled by linear interpolation (ends held); zeros if nothing
    is voiced. A continuous contour is what the models condition on and regress."""
    voiced = f0 > 0
    if not voiced.any():
        return np.zeros_like(f0)
    t = np.arange(len(f0))
    return np.interp(t, t[voiced], np.log(f0[voiced]))

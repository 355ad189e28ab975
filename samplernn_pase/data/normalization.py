"""Per-speaker mean/std of the real-valued conditioning features.

Statistics come from each speaker's training-split frames (all its frames
when it has no training utterance), accumulated from per-utterance sums and
sums of squares kept in the feature cache. Flag dimensions (the voiced flag;
the linguistic position in the phone and stress/accent flags, already in
[0, 1]) get mean 0 / std 1 so that normalizing leaves them as they are; a dimension
that is constant for a speaker gets std 1 (it normalizes to 0 rather than
dividing by zero).
"""

import numpy as np

MIN_STD = 1e-5


class Accumulator:
    """Running sum / sum of squares / frame count of one speaker and feature set."""

    def __init__(self, dim: int):
        self.total = np.zeros(dim, np.float64)
        self.total_squares = np.zeros(dim, np.float64)
        self.count = 0

    def add(self, total: np.ndarray, total_squares: np.ndarray, count: int) -> None:
        self.total += total
        self.total_squares += total_squares
        self.count += int(count)

    def mean_std(self, flag_dims: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            mean, std = np.zeros_like(self.total), np.ones_like(self.total)
        else:
            mean = self.total / self.count
            variance = np.maximum(self.total_squares / self.count - mean ** 2, 0.0)
            std = np.sqrt(variance)
            std[std < MIN_STD] = 1.0
        mean[list(flag_dims)] = 0.0
        std[list(flag_dims)] = 1.0
        return mean.astype(np.float32), std.astype(np.float32)


def normalize(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((values - mean) / std).astype(np.float32)


def denormalize(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The inverse of `normalize`."""
    return (values * std + mean).astype(np.float32)


def standardization(arrays, std_floor: float) -> tuple[float, float, int]:
    """(mean, std + std_floor, count) of every value of `arrays` together (one scalar pair,
    e.g. MelNet's log-mel statistics); the floor keeps a silent corpus from dividing by zero."""
    total = total_squares = count = 0.0
    for values in arrays:
        values = np.asarray(values, np.float64)
        total, total_squares = total + values.sum(), total_squares + np.square(values).sum()
        count += values.size
    if count == 0:
        return 0.0, 1.0, 0
    mean = total / count
    return mean, float(np.sqrt(max(total_squares / count - mean ** 2, 0.0))) + std_floor, int(count)

"""Reading and writing audio.

Every reader in the package goes through `read_audio`, so that stereo files,
other sample rates and integer formats all arrive as mono float32 at the rate
the experiment works at. Writes are atomic (temporary file, then rename) so
an interrupted run never leaves a truncated wav behind.
"""

from pathlib import Path

import numpy as np
import soundfile

from ..files import atomic_open


class AudioReadError(Exception):
    """The file cannot be read as audio (missing, corrupt, empty)."""


def read_audio(path: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int, dict]:
    """Mono float32 audio in [-1, 1] at `sample_rate` (the file's rate if None).

    Returns (audio, sample_rate, info) where info says what was done to the
    file ({"source_sample_rate", "channels", "resampled", "downmixed"}).
    """
    try:
        if Path(path).stat().st_size == 0:
            raise AudioReadError(f"{path}: empty audio (0 bytes)")
    except OSError as error:
        raise AudioReadError(f"{path}: cannot read audio ({error})") from None
    try:
        audio, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, OSError...
        raise AudioReadError(f"{path}: cannot read audio ({error})") from None
    if audio.shape[0] == 0:
        raise AudioReadError(f"{path}: empty audio")
    info = {"source_sample_rate": int(source_rate), "channels": int(audio.shape[1]),
            "resampled": False, "downmixed": audio.shape[1] > 1}
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if sample_rate is not None and source_rate != sample_rate:
        audio = resample(audio, source_rate, sample_rate)
        info["resampled"] = True
    else:
        sample_rate = source_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(sample_rate), info


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    import librosa  # imported here: librosa's import is slow and most callers never resample

    return librosa.resample(audio, orig_sr=source_rate, target_sr=target_rate, res_type="soxr_hq").astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write a 16-bit PCM wav atomically; `audio` is float in [-1, 1] (clipped)."""
    audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_open(path) as file:
        soundfile.write(file, audio, sample_rate, subtype="PCM_16", format="WAV")

"""Feature cache: one .npz per utterance, keyed by feature parameters + file content.

    <data_path>/.cache/features/<parameters hash>/<key[:2]>/<key>.npz

where key hashes the parameters, the audio bytes and the label bytes. Changing
a parameter or a file gives a new key; a second `init` on the same corpus
finds every file and extracts nothing. Files that were left out are cached too
(`<key>.dropped.json`, with the reason), so they are not re-tried either.

An entry holds (see features.extract_utterance): audio (float32, trimmed to
whole frames, at the experiment rate), acoustic (T, 43), and with labels
phone_index (T,), position_in_phone (T,), phone_duration (P,) seconds,
phone_categorical (P, 10) symbols, phone_real (P, 43); plus per-utterance sums and sums of squares of the
real-valued frame features, from which prepare.py builds the per-speaker
normalization without reading every frame again.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from ..files import atomic_open, atomic_write_bytes
from . import features

CACHE_FOLDER = Path(".cache") / "features"
SUMMARY_KEYS = ("num_samples", "num_frames", "acoustic_sum", "acoustic_sumsq",
                "linguistic_sum", "linguistic_sumsq", "phone_categorical", "resampled", "downmixed")


def _hash_file(hasher, path: Path) -> None:
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hasher.update(block)


def params_hash(params: dict) -> str:
    return hashlib.blake2b(json.dumps(params, sort_keys=True).encode(), digest_size=6).hexdigest()


def cache_key(params: dict, audio_path: Path, label_path: Path | None) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(json.dumps(params, sort_keys=True).encode())
    try:
        _hash_file(hasher, audio_path)
    except OSError:
        hasher.update(b"<unreadable audio>")
    hasher.update(b"<labels>")
    if label_path is not None:
        try:
            _hash_file(hasher, label_path)
        except OSError:
            hasher.update(b"<unreadable labels>")
    return hasher.hexdigest()


def entry_path(params: dict, key: str) -> Path:
    """Path of an entry relative to the data path."""
    return CACHE_FOLDER / params_hash(params) / key[:2] / f"{key}.npz"


def _summary(entry: dict, relative_path: Path) -> dict:
    summary = {"status": "kept", "features": relative_path.as_posix(),
               "has_labels": "phone_categorical" in entry}
    for key in SUMMARY_KEYS:
        if key in entry:
            value = entry[key]
            summary[key] = value.item() if np.ndim(value) == 0 else np.asarray(value)
    return summary


def cached_extract(task: dict) -> dict:
    """Summary of one utterance, extracting its features only when not cached.

    task: {"audio": path, "labels": path | None, "data_path": path, "params": dict}.
    Returns {"status": "kept", "features", "has_labels", "num_samples", "num_frames", sums...}
    or {"status": "dropped", "reason", "message"}, plus "recomputed": "<file> (<error>)"
    when a cached entry could not be read and was computed again. Runs in worker
    processes, so the caller logs (prepare.py).
    """
    data_path, params = Path(task["data_path"]), task["params"]
    audio_path = Path(task["audio"])
    label_path = Path(task["labels"]) if task["labels"] else None
    key = cache_key(params, audio_path, label_path)
    relative = entry_path(params, key)
    path = data_path / relative
    dropped_path = path.with_suffix(".dropped.json")
    unreadable = None   # a damaged entry is recomputed; the caller logs its name
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as entry:
                return _summary({name: entry[name] for name in SUMMARY_KEYS if name in entry.files}, relative)
        except Exception as error:
            unreadable = f"{path} ({type(error).__name__}: {error})"
    if dropped_path.exists():
        try:
            return json.loads(dropped_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            unreadable = f"{dropped_path} ({type(error).__name__}: {error})"
    try:
        entry = features.extract_utterance(audio_path, label_path, params)
    except features.BadInput as error:
        result = {"status": "dropped", "reason": error.reason, "message": str(error)}
        atomic_write_bytes(dropped_path, json.dumps(result).encode())
        return {**result, "recomputed": unreadable} if unreadable else result
    entry["num_samples"] = np.int64(len(entry["audio"]))
    entry["num_frames"] = np.int64(len(entry["acoustic"]))
    with atomic_open(path) as file:
        np.savez(file, **entry)
    summary = _summary(entry, relative)
    return {**summary, "recomputed": unreadable} if unreadable else summary


def load_entry(data_path: Path, relative_path: str) -> dict[str, np.ndarray]:
    """All arrays of a cache entry (used by the UtteranceStore).

    FileNotFoundError when it is missing, UnreadableEntry when it is damaged.
    """
    path = Path(data_path) / relative_path
    try:
        with np.load(path, allow_pickle=False) as entry:
            return {name: entry[name] for name in entry.files}
    except FileNotFoundError:
        raise
    except Exception as error:
        raise UnreadableEntry(f"{path}: feature cache entry cannot be read ({type(error).__name__}); "
                              "run `init` again to recompute it") from None


class UnreadableEntry(ValueError):
    """A damaged feature cache entry (truncated, overwritten)."""

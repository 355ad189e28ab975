"""Whole utterances as phone and frame sequences: what the acoustic family reads.

The duration model reads one row per phone (the label's 10 symbols and 43
numbers) and predicts how many frames the phone lasts; the acoustic model
reads one row per frame (the seed's 55 columns) and predicts the 43 WORLD
features. At synthesis the frames are made from predicted durations, so in
training they are made the same way from the recording's durations
(`frame_linguistic`): the frame's phone duration is its frame count times the
hop and its position is (j + 0.5) / n, one code path for training and
synthesis. With the recording's durations it matches the store's frame
features up to the label times' rounding to frames.

Batches are whole utterances, padded, with their lengths (masks); the loader's
position is a plain dict, so a mid-epoch checkpoint resumes at the next batch.
"""

import numpy as np
import torch

from . import hts_labels
from .features import expand_linguistic
from .normalization import normalize
from .planned_batches import PlannedBatches

#: The current phone's symbol (p3) among the categorical columns: what the baselines key on.
PHONE_COLUMN = hts_labels.CATEGORICAL_FIELDS.index("p3")
#: The frame columns the duration model must not read: the phone's duration and the position in it.
TIMING_COLUMNS = 2


def phone_frames(phone_index: np.ndarray, num_phones: int) -> np.ndarray:
    """(P,) int64 frames of each phone, from the phone of every frame (0 for a phone shorter
    than a frame)."""
    return np.bincount(np.asarray(phone_index, np.int64), minlength=num_phones)


def expand_phones(durations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(phone of every frame, position of the frame's centre in its phone, in (0, 1))."""
    durations = np.asarray(durations, np.int64)
    phone_index = np.repeat(np.arange(len(durations)), durations)
    starts = np.repeat(np.cumsum(durations) - durations, durations)
    position = (np.arange(len(phone_index)) - starts + 0.5) / np.maximum(durations[phone_index], 1)
    return phone_index.astype(np.int32), position.astype(np.float32)


def frame_linguistic(phone_categorical: np.ndarray, phone_real: np.ndarray, durations: np.ndarray,
                     hop_seconds: float, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level (categorical (T, 10), real (T, 45) normalized) of phones lasting `durations`
    frames; `phone_real` un-normalized (P, 43), `mean`/`std` the speaker's frame statistics."""
    phone_index, position = expand_phones(durations)
    seconds = np.asarray(durations, np.float32) * np.float32(hop_seconds)
    real = expand_linguistic(phone_index, position, seconds, np.asarray(phone_real, np.float32))
    return np.asarray(phone_categorical)[phone_index], normalize(real, mean, std)


def phone_real_normalized(phone_real: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(P, 43) the label's numbers normalized with the speaker's frame statistics (their columns
    after the two timing columns)."""
    return normalize(np.asarray(phone_real, np.float32), mean[TIMING_COLUMNS:], std[TIMING_COLUMNS:])


def utterance_item(store, utterance_id: str) -> dict:
    """One utterance's arrays for a batch (see `collate`), with the recording's durations."""
    utterance = store.load(utterance_id)
    if utterance.phone_index is None:
        raise ValueError(f"{utterance_id}: no phone labels")
    speaker = utterance.speaker_index
    mean, std = store.linguistic_mean[speaker], store.linguistic_std[speaker]
    durations = phone_frames(utterance.phone_index, len(utterance.phone_categorical))
    categorical, real = frame_linguistic(utterance.phone_categorical, utterance.phone_real, durations,
                                         store.hop_length / store.sample_rate, mean, std)
    return {"speaker": speaker, "phone_categorical": utterance.phone_categorical,
            "phone_real": phone_real_normalized(utterance.phone_real, mean, std), "durations": durations,
            "frame_categorical": categorical, "frame_real": real, "frame_phone": expand_phones(durations)[0],
            "acoustic": utterance.acoustic}


def pad(arrays: list[np.ndarray]) -> torch.Tensor:
    """(B, longest, ...) of arrays of different lengths, zeros after each one's end."""
    longest = max(len(a) for a in arrays)
    out = np.zeros((len(arrays), longest) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    for row, array in enumerate(arrays):
        out[row, :len(array)] = array
    return torch.from_numpy(out)


def collate(items: list[dict]) -> dict:
    """Padded tensors of utterance items: phone_* (B, P, ...), durations (B, P), frame_* and
    acoustic (B, T, ...) (frame_phone: the phone of each frame), speaker (B,), phone_lengths
    and frame_lengths (B,); an item without `acoustic` (new text) has frames of frame_phone."""
    keys = ["phone_categorical", "phone_real", "durations", "frame_categorical", "frame_real", "frame_phone"]
    batch = {key: pad([item[key] for item in items])
             for key in keys + ["acoustic"] * all("acoustic" in item for item in items)}
    batch["speaker"] = torch.tensor([item["speaker"] for item in items])
    batch["phone_lengths"] = torch.tensor([len(item["durations"]) for item in items])
    batch["frame_lengths"] = torch.tensor([len(item["frame_phone"]) for item in items])
    return batch


class UtteranceBatches(PlannedBatches):
    """Batches of whole utterances, shuffled by (seed, epoch), dealt to the DDP ranks in equal
    numbers; `position` batches already given."""

    def __init__(self, store, ids: list[str], batch_size: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        self.store = store
        ids = list(ids)
        if shuffle:
            rng = np.random.default_rng([seed, epoch])
            ids = [ids[i] for i in rng.permutation(len(ids))]
        per_rank = len(ids) // world_size if world_size > 1 else len(ids)
        mine = ids[rank::world_size][:per_rank]
        self.batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
        self.position = 0

    def build(self, ids: list[str]) -> dict:
        return {**collate([utterance_item(self.store, i) for i in ids]), "ids": ids}


def phone_symbol_means(store, ids: list[str], num_symbols: int) -> dict[str, np.ndarray]:
    """The trivial baselines from `ids` (the training split): every speaker's mean normalized
    acoustic features over the frames of each phone symbol (p3), and the mean duration in
    frames of each symbol over all speakers. A (speaker, symbol) pair never seen falls back
    to the speaker's mean over all its frames, an unseen symbol to the mean duration.

    Returns acoustic (speakers, symbols, A) and duration (symbols,)."""
    speakers, dim = store.num_speakers, store.acoustic_dim
    sums = np.zeros((speakers, num_symbols, dim))
    counts = np.zeros((speakers, num_symbols))
    duration_sums, duration_counts = np.zeros(num_symbols), np.zeros(num_symbols)
    for utterance_id in ids:
        utterance = store.load(utterance_id)
        symbols = utterance.phone_categorical[:, PHONE_COLUMN]
        frame_symbols = symbols[utterance.phone_index]
        np.add.at(sums[utterance.speaker_index], frame_symbols, utterance.acoustic)
        np.add.at(counts[utterance.speaker_index], frame_symbols, 1)
        np.add.at(duration_sums, symbols, phone_frames(utterance.phone_index, len(symbols)))
        np.add.at(duration_counts, symbols, 1)
    speaker_mean = sums.sum(axis=1) / np.maximum(counts.sum(axis=1), 1)[:, None]
    acoustic = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], speaker_mean[:, None, :])
    overall = duration_sums.sum() / max(duration_counts.sum(), 1)
    duration = np.where(duration_counts > 0, duration_sums / np.maximum(duration_counts, 1), overall)
    return {"acoustic": acoustic.astype(np.float32), "duration": duration.astype(np.float32)}

"""UtteranceStore: the normalized features and audio of one utterance, fast.

Training calls `load()` for every utterance it puts into a loader slot, so
the store keeps the vocabularies as dicts, the normalization per speaker as
arrays, and a small LRU of recently loaded utterances (read-only arrays:
callers must copy before changing them).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

from . import cache, hts_labels
from .features import expand_linguistic
from .lru import LRUCache
from .normalization import denormalize, normalize


@dataclass
class Utterance:
    id: str
    speaker_index: int
    audio: np.ndarray | None                   # float32 (num_frames * hop_length,); None: features
                                               # without their recording (synthesize --features)
    acoustic: np.ndarray                       # float32 (num_frames, 43), normalized
    linguistic_categorical: np.ndarray | None  # int64 (num_frames, 10) indices into each field's table
    linguistic_real: np.ndarray | None         # float32 (num_frames, 45), normalized
    # Phone level (with labels): what a duration model reads and frames are expanded from.
    phone_index: np.ndarray | None = None      # int32 (num_frames,) the phone of each frame
    phone_categorical: np.ndarray | None = None  # int64 (num_phones, 10) indices into each field's table
    phone_real: np.ndarray | None = None       # float32 (num_phones, 43) the label's numbers, un-normalized

    @property
    def num_frames(self) -> int:
        return len(self.acoustic)


class UtteranceStore:
    def __init__(self, index: dict, normalization: dict[str, np.ndarray], data_path: Path, cache_size: int = 64):
        self.index = index
        self.data_path = Path(data_path)
        self.hop_length = index["hop_length"]
        self.sample_rate = index["sample_rate"]
        self.speakers = {s["id"]: s for s in index["speakers"]}
        self.utterances = {u["id"]: u for u in index["utterances"]}
        rows = {str(s): i for i, s in enumerate(normalization["speakers"])}
        # Rows of the normalization arrays follow the speaker `index` of data.json.
        order = [rows[s["id"]] for s in sorted(index["speakers"], key=lambda s: s["index"])]
        self.acoustic_mean = np.asarray(normalization["acoustic_mean"], np.float32)[order]
        self.acoustic_std = np.asarray(normalization["acoustic_std"], np.float32)[order]
        linguistic = index.get("linguistic")
        if linguistic is not None:
            if linguistic.get("columns") != hts_labels.COLUMNS:
                raise UserError("data.json: the linguistic features are of an older layout; run `init` again")
            tables = {table: {symbol: i for i, symbol in enumerate(symbols)}
                      for table, symbols in linguistic["vocabularies"].items()}
            # One dict per categorical column: the vocabulary of the table it indexes.
            self.vocabularies = [tables[linguistic["table_of_field"][field]]
                                 for field in linguistic["categorical_fields"]]
            self.linguistic_tables = [linguistic["vocabularies"][table] for table in hts_labels.TABLES]
            self.linguistic_mean = np.asarray(normalization["linguistic_real_mean"], np.float32)[order]
            self.linguistic_std = np.asarray(normalization["linguistic_real_std"], np.float32)[order]
        else:
            self.vocabularies, self.linguistic_tables = [], []
        self._cache = LRUCache(cache_size)

    # --- shape information for the models ---
    @property
    def acoustic_dim(self) -> int:
        return len(self.index["acoustic_fields"])

    @property
    def linguistic_table_sizes(self) -> list[int]:
        """Vocabulary size of each shared table (hts_labels.TABLES order), [] without labels."""
        return [len(symbols) for symbols in self.linguistic_tables]

    @property
    def linguistic_column_tables(self) -> list[int]:
        """For each categorical column, the index of the table it looks up."""
        if not self.linguistic_tables:
            return []
        return [hts_labels.TABLES.index(hts_labels.CATEGORICAL_TABLES[f]) for f in hts_labels.CATEGORICAL_FIELDS]

    @property
    def linguistic_real_dim(self) -> int:
        linguistic = self.index.get("linguistic")
        return len(linguistic["real_fields"]) if linguistic else 0

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    def ids(self, split: str | None = None, speaker_set: str | None = None) -> list[str]:
        """Utterance ids (data.json order), optionally of one split and/or speaker set."""
        return [u["id"] for u in self.index["utterances"]
                if (split is None or u["split"] == split)
                and (speaker_set is None or self.speakers[u["speaker"]]["set"] == speaker_set)]

    def add(self, utterance: dict) -> None:
        """An utterance outside the corpus (`synthesize --features/--text`): its data.json
        record, whose `features` file is read like a cache entry."""
        if utterance["id"] in self.utterances:
            raise UserError(f"{utterance['id']}: already an utterance of data.json")
        self.index["utterances"].append(utterance)
        self.utterances[utterance["id"]] = utterance

    def remove(self, utterance_id: str) -> None:
        """Drop an utterance `add` gave (the Python API renders one input after another)."""
        self.index["utterances"][:] = [u for u in self.index["utterances"] if u["id"] != utterance_id]
        self.utterances.pop(utterance_id, None)
        self._cache.discard(utterance_id)

    def raw_acoustic(self, utterance: Utterance) -> np.ndarray:
        """The utterance's acoustic features as extracted (un-normalized)."""
        speaker = utterance.speaker_index
        return denormalize(utterance.acoustic, self.acoustic_mean[speaker], self.acoustic_std[speaker])

    def speaker_index(self, utterance_id: str) -> int:
        return self.speakers[self.utterances[utterance_id]["speaker"]]["index"]

    def load(self, utterance_id: str) -> Utterance:
        """The utterance, read from the feature cache once while it stays among the
        `cache_size` most recently loaded."""
        return self._cache.get(utterance_id, self._read)

    def _read(self, utterance_id: str) -> Utterance:
        entry = self.utterances[utterance_id]
        speaker = self.speaker_index(utterance_id)
        try:
            arrays = cache.load_entry(self.data_path, entry["features"])
        except FileNotFoundError:
            raise UserError(f"{Path(self.data_path) / entry['features']}: features of {utterance_id} "
                            "are missing (wrong --data-path, or the cache was deleted: run `init` "
                            "again)") from None
        except cache.UnreadableEntry as error:
            raise UserError(f"{error} (utterance {utterance_id})") from None
        acoustic = normalize(arrays["acoustic"], self.acoustic_mean[speaker], self.acoustic_std[speaker])
        categorical = real = phone_index = phone_indices = phone_real = None
        if self.vocabularies and "phone_categorical" in arrays:
            phone_symbols = arrays["phone_categorical"]
            phone_indices = np.array([[vocabulary.get(symbol, vocabulary[hts_labels.UNKNOWN_SYMBOL])
                                       for vocabulary, symbol in zip(self.vocabularies, row)]
                                      for row in phone_symbols.tolist()], dtype=np.int64
                                     ).reshape(len(phone_symbols), len(self.vocabularies))
            phone_index = arrays["phone_index"]
            categorical = phone_indices[phone_index]
            real_values = expand_linguistic(phone_index, arrays["position_in_phone"], arrays["phone_duration"],
                                            arrays["phone_real"])
            real = normalize(real_values, self.linguistic_mean[speaker], self.linguistic_std[speaker])
            phone_real = arrays["phone_real"].astype(np.float32, copy=False)
        audio = arrays.get("audio")
        if audio is not None:
            audio = audio.astype(np.float32, copy=False)
        utterance = Utterance(utterance_id, speaker, audio, acoustic, categorical, real,
                              phone_index, phone_indices, phone_real)
        for array in (utterance.audio, utterance.acoustic, categorical, real, phone_index, phone_indices,
                      phone_real):
            if array is not None:
                array.flags.writeable = False
        return utterance

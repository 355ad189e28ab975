"""The independent judges of a `test`: speaker similarity, DNSMOS, intelligibility and Fréchet distances.

One `Evaluation` per runner, built on first use: Resemblyzer and DNSMOS
load lazily, and what does not change between epochs is computed once (the
embeddings of each speaker's real recordings, the scores of the reference
rows, the real set's Fréchet embeddings).

Speaker references: for every speaker of the experiment, up to
`REFERENCE_UTTERANCES_PER_SPEAKER` of its real recordings (validation split
first, then test, then train; each in data.json order), one Resemblyzer
embedding each. A rendered utterance is scored against its own speaker's
centroid without the recording of that same utterance, and against the
other speakers' centroids (mean cosine), for the model's audio and for the
reference rows alike.

Intelligibility (intelligibility.py): WER and CER of Whisper tiny.en for audio
that says the words of a transcribed utterance, against the words said in the
span it covers; the same words for the model's audio and its reference rows.
"""

import hashlib

import numpy as np

from ..data.features import feature_params
from . import intelligibility
from .frechet import audio_frechet
from .mos import dnsmos
from .speaker import SpeakerCentroids, resemblyzer_embedding

REFERENCE_UTTERANCES_PER_SPEAKER = 6
SPLIT_ORDER = {"validation": 0, "test": 1, "train": 2}


class Evaluation:
    def __init__(self, index: dict, store, data_config: dict, pase=None):
        self.index, self.store, self.pase = index, store, pase
        self.sample_rate = index["sample_rate"]
        self.params = index.get("feature_params") or feature_params(data_config)
        self.unscored: dict[str, str] = {}      # utterance -> why it has no WER
        self._centroids = None
        self._reference_scores: dict[tuple, dict] = {}
        self._frechet_cache: dict = {}

    def speaker_of(self, utterance_id: str | None) -> str | None:
        """The utterance's speaker, None for audio of no utterance. The store's record, kept
        current as new input (`synthesize --text`, the benches, the Python API) comes and goes."""
        utterance = self.store.utterances.get(utterance_id)
        return None if utterance is None else utterance["speaker"]

    @property
    def centroids(self) -> SpeakerCentroids:
        if self._centroids is None:
            chosen = {}
            recordings = [u for u in self.index["utterances"] if u["split"] in SPLIT_ORDER]
            for utterance in sorted(recordings, key=lambda u: SPLIT_ORDER[u["split"]]):
                ids = chosen.setdefault(utterance["speaker"], [])
                if len(ids) < REFERENCE_UTTERANCES_PER_SPEAKER:
                    ids.append(utterance["id"])
            embeddings = {i: resemblyzer_embedding(self.store.load(i).audio, self.sample_rate)
                          for ids in chosen.values() for i in ids}
            self._centroids = SpeakerCentroids(embeddings, {i: self.speaker_of(i) for i in embeddings})
        return self._centroids

    def spoken_words(self, utterance_id: str | None, num_samples: int) -> str | None:
        """The words of a transcribed utterance said in its first `num_samples` (None: none
        known; the reason is kept for `settings`). A data.json without `text` (written
        before transcripts were kept) has none."""
        utterance = self.store.utterances.get(utterance_id)
        if utterance is None or utterance.get("text") is None:
            return None
        words, reason = intelligibility.spoken_words(utterance["text"], utterance.get("word_ends"),
                                                     utterance["seconds"], num_samples / self.sample_rate)
        if reason is None:
            self.unscored.pop(utterance_id, None)
        else:
            self.unscored[utterance_id] = reason
        return words

    def judge(self, audio: np.ndarray, utterance_id: str | None = None, words: str | None = None) -> dict:
        """Speaker similarity to the utterance's speaker (when it has one), DNSMOS, and WER/CER
        against the words the audio should say (when given)."""
        speaker = self.speaker_of(utterance_id)
        if speaker is None:          # e.g. an unconditional sample: no speaker to compare with
            scores = SpeakerCentroids({}, {}).scores(None, None)
        else:
            embedding = resemblyzer_embedding(audio, self.sample_rate)
            scores = self.centroids.scores(embedding, speaker, exclude=utterance_id)
        scores.update(dnsmos(audio, self.sample_rate))
        if words is not None:
            scores.update(intelligibility.judge_intelligibility(audio, self.sample_rate, words))
        return scores

    def judge_reference(self, row: str, audio: np.ndarray, utterance_id: str, words: str | None = None) -> dict:
        """`judge` of a reference row (real, world, ...), remembered by its audio: the recording's
        rows do not change by epoch, and a row that does (the acoustic family's WORLD rendering
        of its predicted features) is judged again, even at the same length."""
        key = (row, utterance_id, hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest(), words)
        if key not in self._reference_scores:
            self._reference_scores[key] = self.judge(audio, utterance_id, words)
        return self._reference_scores[key]

    def real_set(self, speaker_set: str, max_samples: int | None) -> tuple[list[str], list[np.ndarray]]:
        """The real test-split recordings of a speaker set, cut like the rendered audio."""
        speakers = {s["id"] for s in self.index["speakers"] if s["set"] == speaker_set}
        ids = [u["id"] for u in self.index["utterances"]
               if u["split"] == "test" and u["speaker"] in speakers]
        return ids, [self.store.load(i).audio[:max_samples] for i in ids]

    def frechet(self, generated: list[np.ndarray], speaker_set: str, max_samples: int | None) -> dict:
        """Fréchet distances of generated audio to the real test set of the speaker set, with floors."""
        ids, real = self.real_set(speaker_set, max_samples)
        keys = [(i, None if max_samples is None else int(max_samples)) for i in ids]
        return audio_frechet(generated, real, self.sample_rate, self.pase, self._frechet_cache, keys)

    def settings(self, utterance_ids=None) -> dict:
        """What metrics.json says about how it was judged (`unscored`: of `utterance_ids`, or all)."""
        from importlib.metadata import version
        return {
            "speaker_encoder": f"Resemblyzer {version('Resemblyzer')} (GE2E, weights from its wheel)",
            "speaker_references_per_speaker": REFERENCE_UTTERANCES_PER_SPEAKER,
            "mos": f"DNSMOS P.808 and P.835 (speechmos {version('speechmos')}, "
                   f"onnxruntime {version('onnxruntime')})",
            "intelligibility": {**intelligibility.settings(), "unscored": {
                i: why for i, why in sorted(self.unscored.items()) if utterance_ids is None or i in utterance_ids}},
            "analysis": {k: self.params[k] for k in ("f0_method", "f0_floor", "f0_ceil", "mcep_order",
                                                     "mcep_alpha", "hop_length", "sample_rate")},
        }

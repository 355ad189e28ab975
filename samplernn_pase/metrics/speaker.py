"""Speaker similarity from a speaker encoder this project did not train.

Resemblyzer's GE2E voice encoder (its weights `pretrained.pt` ship inside the
wheel, so nothing is downloaded) gives a 256-dimensional, L2-normalized
embedding per utterance. Its `preprocess_wav` resamples to 16 kHz, normalizes
the volume and removes long silences with webrtcvad; a clip so short that the
VAD keeps almost nothing is embedded untrimmed. The encoder is loaded once per
process, on first use, on the CPU.

The same helpers (cosines to speaker centroids, nearest-centroid
identification) also score the project's own PASE embeddings.
"""

import warnings

import numpy as np

RESEMBLYZER_RATE = 16000
MIN_TRIMMED_SECONDS = 0.5    # below this, the VAD has removed (nearly) everything: keep the clip

_ENCODER = None


def voice_encoder():
    """Resemblyzer's VoiceEncoder, loaded once (about a second) from the weights in its wheel."""
    global _ENCODER
    if _ENCODER is None:
        with warnings.catch_warnings():     # deprecation notices of its imports
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder
        _ENCODER = VoiceEncoder(device="cpu", verbose=False).eval()
    return _ENCODER


def resemblyzer_embedding(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """(256,) float32 unit vector of one utterance; None for silence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import audio as resemblyzer_audio
    encoder = voice_encoder()
    wave = np.asarray(audio, dtype=np.float32)
    if sample_rate != RESEMBLYZER_RATE:
        import librosa
        wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=RESEMBLYZER_RATE)
    if not np.any(np.abs(wave) > 1e-6):
        return None
    wave = np.clip(resemblyzer_audio.normalize_volume(wave, resemblyzer_audio.audio_norm_target_dBFS,
                                                      increase_only=True), -1.0, 1.0)
    trimmed = resemblyzer_audio.trim_long_silences(wave)
    if len(trimmed) >= MIN_TRIMMED_SECONDS * RESEMBLYZER_RATE:
        wave = trimmed
    embedding = encoder.embed_utterance(wave.astype(np.float32))
    return embedding.astype(np.float32) if np.all(np.isfinite(embedding)) else None


def cosine_similarity(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def speaker_similarity(model, generated_wave, reference_waves, sample_rate, seed_seconds=None) -> float:
    """Cosine between the PASE embedding (of the project's encoder `model`) of generated speech
    and that of the real speaker's audio.

    The reference embedding averages the first seed_seconds of reference_waves
    (all of it if None); the generated one averages the whole generated wave.
    """
    from ..models.pase import embed
    generated = embed(model, [generated_wave], sample_rate)
    reference = embed(model, reference_waves, sample_rate, seconds=seed_seconds)
    return cosine_similarity(generated, reference)


def centroid(embeddings) -> np.ndarray:
    """Mean of unit-normalized embeddings, normalized (GE2E's speaker centroid)."""
    stacked = np.stack([np.asarray(e, np.float64) for e in embeddings])
    stacked /= np.linalg.norm(stacked, axis=1, keepdims=True) + 1e-12
    mean = stacked.mean(0)
    return mean / (np.linalg.norm(mean) + 1e-12)


class SpeakerCentroids:
    """Embeddings of each speaker's real recordings; cosines of a probe to its own speaker's
    centroid (without the probe's own recording) and to the other speakers' centroids."""

    def __init__(self, embeddings: dict[str, np.ndarray], speaker_of: dict[str, str]):
        self.by_speaker: dict[str, dict[str, np.ndarray]] = {}
        for utterance_id, embedding in embeddings.items():
            if embedding is not None:
                self.by_speaker.setdefault(speaker_of[utterance_id], {})[utterance_id] = embedding
        self.centroids = {s: centroid(list(e.values())) for s, e in self.by_speaker.items()}

    def centroid_without(self, speaker: str, exclude: str | None) -> np.ndarray | None:
        own = self.by_speaker.get(speaker, {})
        if exclude not in own:
            return self.centroids.get(speaker)
        rest = [e for u, e in own.items() if u != exclude]
        return centroid(rest) if rest else None

    def scores(self, embedding: np.ndarray | None, speaker: str | None,
               exclude: str | None = None) -> dict:
        """speaker_similarity_own, speaker_similarity_other (mean over the other speakers),
        speaker_identified (1.0 when the own centroid is the nearest); None where undefined."""
        empty = {"speaker_similarity_own": None, "speaker_similarity_other": None,
                 "speaker_identified": None}
        if embedding is None or speaker is None:
            return empty
        own_centroid = self.centroid_without(speaker, exclude)
        others = {s: cosine_similarity(embedding, c) for s, c in self.centroids.items() if s != speaker}
        own = None if own_centroid is None else cosine_similarity(embedding, own_centroid)
        return {"speaker_similarity_own": own,
                "speaker_similarity_other": float(np.mean(list(others.values()))) if others else None,
                "speaker_identified": None if own is None or not others
                else float(own > max(others.values()))}


def speaker_identification(enrollment: dict[str, list[np.ndarray]],
                           probes: list[tuple[str, np.ndarray]]) -> dict:
    """Nearest-centroid speaker identification of held-out probes against enrollment centroids.

    enrollment: speaker -> embeddings of that speaker's enrollment utterances;
    probes: (true speaker, embedding) of other utterances (None embeddings are left out).
    Returns the accuracy, chance (1 / speakers), the mean cosine of a probe to its own
    centroid and to the other speakers' centroids, and the confusions ("true->nearest": count).
    """
    centroids = {s: centroid([e for e in embeddings if e is not None])
                 for s, embeddings in enrollment.items() if any(e is not None for e in embeddings)}
    speakers = sorted(centroids)
    probes = [(s, e) for s, e in probes if e is not None and s in centroids]
    correct, own, other, confusions = 0, [], [], {}
    for speaker, embedding in probes:
        cosines = {s: cosine_similarity(embedding, centroids[s]) for s in speakers}
        nearest = max(cosines, key=cosines.get)
        correct += int(nearest == speaker)
        if nearest != speaker:
            confusions[f"{speaker}->{nearest}"] = confusions.get(f"{speaker}->{nearest}", 0) + 1
        own.append(cosines[speaker])
        other += [c for s, c in cosines.items() if s != speaker]
    return {"accuracy": correct / len(probes) if probes else None,
            "chance": 1.0 / len(speakers) if speakers else None,
            "own_cosine": float(np.mean(own)) if own else None,
            "other_cosine": float(np.mean(other)) if other else None,
            "speakers": len(speakers), "probes": len(probes), "confusions": confusions}

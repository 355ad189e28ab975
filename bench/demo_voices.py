"""Do the demo corpus's voices really differ? Resemblyzer identification of its recordings.

    python bench/demo_voices.py [--speakers 48] [--sentences 10] [--workspace DIR]

Builds the demo corpus (data/demo_corpus.build_demo_corpus, as `init` does) with
`--speakers` voices reading `--sentences` sentences each, embeds every recording
with Resemblyzer (an encoder the project did not train) and identifies each one
by its nearest speaker centroid among all the corpus's speakers, its own
centroid made without it (the test's judge, metrics/speaker.SpeakerCentroids).

Prints one JSON line: the accuracy over all recordings (and chance, 1 / N), by
gender, each speaker's accuracy, the mean cosine to the own centroid and to the
others', the closest pair of centroids, and the confusions ("true->nearest").
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase.audio.io import read_audio  # noqa: E402
from samplernn_pase.data.demo_corpus import SPEAKERS, build_demo_corpus  # noqa: E402
from samplernn_pase.metrics.speaker import SpeakerCentroids, cosine_similarity, resemblyzer_embedding  # noqa: E402


def judge(root: Path, speakers: list[str]) -> dict:
    """Leave-one-out nearest-centroid identification of every recording under root/<speaker>/."""
    embeddings, speaker_of = {}, {}
    for speaker in speakers:
        for wav in sorted((root / speaker).glob("*.wav")):
            audio, rate, _ = read_audio(wav)
            embeddings[wav.stem], speaker_of[wav.stem] = resemblyzer_embedding(audio, rate), speaker
    centroids = SpeakerCentroids(embeddings, speaker_of)
    per_speaker, confusions = {}, {}
    own, other = [], []
    for utterance_id, embedding in embeddings.items():
        speaker = speaker_of[utterance_id]
        scores = centroids.scores(embedding, speaker, exclude=utterance_id)
        per_speaker.setdefault(speaker, []).append(scores["speaker_identified"])
        own.append(scores["speaker_similarity_own"])
        other.append(scores["speaker_similarity_other"])
        if not scores["speaker_identified"]:
            cosines = {s: cosine_similarity(embedding, c) for s, c in centroids.centroids.items() if s != speaker}
            key = f"{speaker}->{max(cosines, key=cosines.get)}"
            confusions[key] = confusions.get(key, 0) + 1
    gender = {row[0]: row[1] for row in SPEAKERS}
    names = sorted(centroids.centroids)
    pairs = [(cosine_similarity(centroids.centroids[a], centroids.centroids[b]), a, b)
             for i, a in enumerate(names) for b in names[i + 1:]]
    closest = max(pairs)
    by_gender = {g: float(np.mean([v for s, values in per_speaker.items() if gender[s] == g for v in values]))
                 for g in ("f", "m")}
    return {"identified": round(float(np.mean([v for values in per_speaker.values() for v in values])), 4),
            "chance": round(1 / len(speakers), 4),
            "identified_by_gender": {g: round(v, 4) for g, v in by_gender.items()},
            "own": round(float(np.mean(own)), 4), "other": round(float(np.mean(other)), 4),
            "by_speaker": {s: round(float(np.mean(v)), 3) for s, v in per_speaker.items()},
            "closest_centroids": {"pair": [closest[1], closest[2]], "cosine": round(closest[0], 4)},
            "confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=len(SPEAKERS), help="the first N rows of SPEAKERS")
    parser.add_argument("--sentences", type=int, default=10, help="sentences per speaker")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--workspace", type=Path, default=None, help="keep the corpus here (default: a temporary folder)")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="samplernn_pase-voices-") as folder:
        root = (args.workspace or Path(folder)) / f"demo_{args.speakers}x{args.sentences}"
        build_demo_corpus(root, args.speakers, args.sentences, args.sample_rate)
        built = time.time() - started
        speakers = [row[0] for row in SPEAKERS[:args.speakers]]
        result = judge(root, speakers)
    print(json.dumps({"speakers": args.speakers, "sentences": args.sentences, **result,
                      "seconds": {"corpus": round(built, 1), "total": round(time.time() - started, 1)}}))


if __name__ == "__main__":
    main()

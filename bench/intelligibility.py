"""The intelligibility judge on the demo's test recordings and their WORLD resynthesis.

    python bench/intelligibility.py [--data-path /tmp/demo_data] [--max-seconds 2.0] [--utterances 4]

Runs `init`'s data preparation on the demo corpus (built in --data-path when
missing), takes the utterances a `test` renders (--utterances of the test split
of the modeling speakers, one per speaker first; 0: all of them), and prints one JSON object: mean WER and CER of Whisper
tiny.en on the real recordings and on their WORLD resynthesis from the cached
features, whole and cut to --max-seconds with the label-span rule (the words
whose end lies inside the cut), the number of utterances scored and why the
others were not, and the seconds the judge took.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase.data import cache  # noqa: E402
from samplernn_pase.data.features import world_resynthesis  # noqa: E402
from samplernn_pase.data.prepare import prepare_data  # noqa: E402
from samplernn_pase.data.store import UtteranceStore  # noqa: E402
from samplernn_pase.experiment.config import fill_defaults, load_schema  # noqa: E402
from samplernn_pase.metrics import intelligibility  # noqa: E402
from samplernn_pase.runners.rendering import choose_test_utterances  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", type=Path, default=Path("/tmp/samplernn_pase_bench_demo"))
    parser.add_argument("--max-seconds", type=float, default=2.0)
    parser.add_argument("--utterances", type=int, default=4, help="as test.utterances; 0: the whole test split")
    args = parser.parse_args()
    data_config = fill_defaults(load_schema("data"), {})
    index, normalization = prepare_data(data_config, args.data_path, seed=0, num_workers=2,
                                        log=logging.getLogger("bench"))
    store = UtteranceStore(index, normalization, args.data_path)
    chosen = choose_test_utterances(index, args.utterances or len(index["utterances"]))
    utterances = [u for u in index["utterances"] if u["id"] in chosen]
    rate = index["sample_rate"]
    rows = {f"{row}_{span}": [] for row in ("real", "world") for span in ("whole", "cut")}
    unscored, started = {}, time.perf_counter()
    for utterance in utterances:
        real = store.load(utterance["id"]).audio
        acoustic = cache.load_entry(args.data_path, utterance["features"])["acoustic"]
        world = world_resynthesis(acoustic, index["feature_params"])[:len(real)]
        cut = int(args.max_seconds * rate)
        for span, length in (("whole", len(real)), ("cut", min(cut, len(real)))):
            words, reason = intelligibility.spoken_words(utterance["text"], utterance["word_ends"],
                                                         utterance["seconds"], length / rate)
            if words is None:
                unscored[f"{utterance['id']} ({span})"] = reason
                continue
            for row, audio in (("real", real), ("world", world)):
                scores = intelligibility.judge_intelligibility(audio[:length], rate, words)
                rows[f"{row}_{span}"].append(scores)
    seconds = time.perf_counter() - started
    result = {"utterances": len(utterances), "max_seconds": args.max_seconds,
              **{name: {"utterances_scored": len(scores),
                        "wer": float(np.mean([s["wer"] for s in scores])) if scores else None,
                        "cer": float(np.mean([s["cer"] for s in scores])) if scores else None}
                 for name, scores in rows.items()},
              "unscored": unscored, "judge_seconds": round(seconds, 1),
              "transcriptions": sum(len(s) for s in rows.values())}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

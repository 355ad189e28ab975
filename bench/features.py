"""Feature-extraction throughput: seconds of audio processed per wall-clock second.

Builds the demo corpus into a temporary folder, then runs the extraction of
`init` (cache disabled by a fresh cache folder each run) with one worker and
with all workers. Prints one JSON line.

    python bench/features.py [--workers N] [--files N]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase.data import features  # noqa: E402
from samplernn_pase.data.demo_corpus import build_demo_corpus  # noqa: E402
from samplernn_pase.data.prepare import extract_all  # noqa: E402
from samplernn_pase.experiment.config import fill_defaults, load_schema  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="workers of the parallel run")
    parser.add_argument("--files", type=int, default=64, help="demo files to process per run")
    args = parser.parse_args()
    config = fill_defaults(load_schema("data"), {})
    params = features.feature_params(config)
    with tempfile.TemporaryDirectory() as folder:
        root = build_demo_corpus(Path(folder) / "demo", 8, 20, config["sample_rate"])
        wavs = sorted(root.rglob("*.wav"))[: args.files]
        seconds = sum(len(features.read_audio(w, config["sample_rate"])[0]) for w in wavs) / config["sample_rate"]
        result = {"files": len(wavs), "audio_seconds": round(seconds, 2)}
        for label, workers in (("one_worker", 1), ("all_workers", args.workers)):
            cache_root = Path(folder) / f"cache_{label}"
            tasks = [{"audio": str(w), "labels": str(w.with_suffix(".lab")), "data_path": str(cache_root),
                      "params": params} for w in wavs]
            start = time.perf_counter()
            extract_all(tasks, workers, None)
            elapsed = time.perf_counter() - start
            result[f"{label}_audio_seconds_per_second"] = round(seconds / elapsed, 2)
        result["workers"] = args.workers
    print(json.dumps(result))


if __name__ == "__main__":
    main()

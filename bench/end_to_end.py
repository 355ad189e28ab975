"""The seed's end-to-end text to speech beside the two-stage pipeline: one test, whole utterances, same judges.

    python bench/end_to_end.py --experiment seed_e2e --epoch 4 --experiment tts --epoch 30
                               [--experiments-path experiments] [--data-path data] [--utterances 0]
                               [--output-dir DIR]

Each --experiment (with its --epoch, in the same order; "latest" for the last) renders
the same test utterances of the modeling speakers (--utterances as `test.utterances`,
one per speaker first; 0: the whole test split), whole (`test.max_seconds: null`, so
every utterance is scored against its whole transcript), through its runner's own
`test` (a SampleRNN experiment: the real labels, durations and F0 of `linguistic_lf0`
conditioning; an acoustic experiment: predicted durations and features through its
vocoder). Prints one JSON line: per experiment the mean of every judge over the
utterances for the model row and for each reference row (`real`, `world`,
`world_predicted`): DNSMOS OVRL, WER, CER, speaker identification, MCD, F0 RMSE,
V/UV error, and the acoustic family's oracle-duration figures.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase import cli  # noqa: E402
from samplernn_pase.experiment.folder import Experiment  # noqa: E402
from samplernn_pase.runners.rendering import choose_test_utterances  # noqa: E402

JUDGES = ("dnsmos_ovrl", "wer", "cer", "speaker_identified", "speaker_similarity_own", "mcd_db", "f0_rmse_hz",
          "vuv_error", "oracle_mcd_db", "oracle_f0_rmse_hz", "oracle_vuv_error", "duration_rmse_frames")


def means(metrics: dict) -> dict:
    """The judges' means of one row (metrics.json's `mean`), with how many utterances WER scored."""
    row = {judge: round(metrics["mean"][judge], 4) for judge in JUDGES if metrics["mean"].get(judge) is not None}
    row["wer_scored"] = sum(u.get("wer") is not None for u in metrics["utterances"].values())
    return row


def judged(experiments_path: Path, data_path: Path, name: str, epoch: str, utterances: int, out_dir: Path) -> dict:
    """One experiment's test of the chosen utterances, whole: its rows' means."""
    experiment = Experiment(experiments_path, name)
    experiment.require()
    epoch = experiment.resolve_epoch(None if epoch == "latest" else int(epoch))
    index = experiment.data_index()
    chosen = choose_test_utterances(index, utterances or len(index["utterances"]))
    runner = cli.trained_runner(argparse.Namespace(data_path=data_path), experiment, epoch, torch.device("cpu"))
    runner.config = {**runner.config, "test": {**runner.config["test"], "max_seconds": None}}
    started = time.process_time()
    metrics = runner.test(epoch, out_dir / name, None, utterance_ids=sorted(chosen))
    return {"type": experiment.config()["model"]["type"], "epoch": epoch,
            "utterances": sorted(metrics["utterances"]), "model": means(metrics),
            **{row: means(reference) for row, reference in metrics.get("references", {}).items()},
            "test_cpu_seconds": round(time.process_time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", action="append", required=True, help="an experiment to judge (repeat)")
    parser.add_argument("--epoch", action="append", default=None, help="its checkpoint epoch, or latest (repeat)")
    parser.add_argument("--experiments-path", type=Path, default=Path("experiments"))
    parser.add_argument("--data-path", type=Path, default=Path("data"))
    parser.add_argument("--utterances", type=int, default=0, help="as test.utterances; 0: the whole test split")
    parser.add_argument("--output-dir", type=Path, default=None, help="the wavs and metrics.json (default: temporary)")
    args = parser.parse_args()
    epochs = args.epoch or ["latest"] * len(args.experiment)
    if len(epochs) != len(args.experiment):
        raise SystemExit(f"--epoch: {len(epochs)} given for {len(args.experiment)} --experiment")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="samplernn_pase-end-to-end-") as folder:
        out_dir = args.output_dir or Path(folder)
        results = {name: judged(args.experiments_path, args.data_path, name, epoch, args.utterances, out_dir)
                   for name, epoch in zip(args.experiment, epochs)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()

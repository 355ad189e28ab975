"""Text to speech judged: held-out sentences said by every modeling speaker of an acoustic experiment.

    python bench/text_to_speech.py --experiment tts [--experiments-path experiments] [--data-path data]
                                   [--sentences 20] [--batch-size 40] [--output-dir DIR]
                                   [--speakers ID ...] [--vocoder-temperature T] [--global-variance on|off]

Each sentence of samplernn_pase/data/sentences_heldout.txt (no demo speaker reads
them) is read by eSpeak NG in each modeling speaker's voice (`synthesize --text`'s
front end, data/synthesis_input.text_record) and rendered by the acoustic experiment
the way `synthesize --text` renders it (runners/synthesis.new_inputs: predicted durations,
predicted features, the vocoder; batched as the test is). The test's judges score
four rows:

- `tts`: the acoustic model + its vocoder (the model row);
- `world_predicted`: WORLD rendering of the same predicted features;
- `espeak`: eSpeak's own reading in the same voice (the ceiling; the `real` row);
- `espeak_world`: WORLD resynthesis of eSpeak's reading (the `world` row).

Prints one JSON line: per row the mean WER and CER (Whisper tiny.en,
metrics/intelligibility.py), DNSMOS OVRL, Resemblyzer cosine to the speaker's own
centroid and to the others', identification (nearest centroid among all the
corpus's speakers, per sentence, and per speaker by majority), and the issue's
three requirements for `tts` (WER at most 2x the ceiling's, every modeling speaker
identified, DNSMOS OVRL at least 1.5) with pass/fail.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase import cli  # noqa: E402
from samplernn_pase.data.synthesis_input import text_record  # noqa: E402
from samplernn_pase.runners.synthesis import new_inputs  # noqa: E402
from samplernn_pase.experiment.folder import Experiment  # noqa: E402

HELDOUT = Path(__file__).resolve().parents[1] / "samplernn_pase" / "data" / "sentences_heldout.txt"
ROWS = {"tts": None, "world_predicted": "world_predicted", "espeak": "real", "espeak_world": "world"}


def mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def summary(per_utterance: dict, speaker_of: dict) -> dict:
    """Means of the judges over the sentences, and identification per speaker by majority."""
    identified = {}
    for utterance_id, metrics in per_utterance.items():
        identified.setdefault(speaker_of[utterance_id], []).append(metrics.get("speaker_identified"))
    by_speaker = {s: mean(v) for s, v in identified.items()}
    return {"wer": mean(m.get("wer") for m in per_utterance.values()),
            "cer": mean(m.get("cer") for m in per_utterance.values()),
            "dnsmos_ovrl": mean(m.get("dnsmos_ovrl") for m in per_utterance.values()),
            "speaker_similarity_own": mean(m.get("speaker_similarity_own") for m in per_utterance.values()),
            "speaker_similarity_other": mean(m.get("speaker_similarity_other") for m in per_utterance.values()),
            "identified_sentences": mean(m.get("speaker_identified") for m in per_utterance.values()),
            "identified_by_speaker": by_speaker,
            "speakers_identified": sum(v is not None and v > 0.5 for v in by_speaker.values()),
            "seconds": round(float(sum(m.get("seconds", 0.0) for m in per_utterance.values())), 1),
            "scored": sum(m.get("wer") is not None for m in per_utterance.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="name of a trained acoustic experiment")
    parser.add_argument("--experiments-path", type=Path, default=Path("experiments"))
    parser.add_argument("--data-path", type=Path, default=Path("data"))
    parser.add_argument("--epoch", default=None, help="checkpoint epoch (default: the latest)")
    parser.add_argument("--sentences", type=int, default=20, help="the first N held-out sentences")
    parser.add_argument("--batch-size", type=int, default=40, help="utterances the vocoder generates side by side")
    parser.add_argument("--output-dir", type=Path, default=None, help="the wavs and metrics.json (default: a temporary folder)")
    parser.add_argument("--speakers", nargs="+", default=None,
                        help="only these modeling speakers (default: all; identification is still among all the corpus's)")
    parser.add_argument("--vocoder-temperature", type=float, default=None,
                        help="sample the vocoder at this temperature (default: the vocoder experiment's test.temperature)")
    parser.add_argument("--global-variance", choices=("on", "off"), default=None,
                        help="override model.global_variance (on needs a model trained with it on: its variances)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    experiment = Experiment(args.experiments_path, args.experiment)
    experiment.require()
    config, index = experiment.config(), experiment.data_index()
    if config["model"]["type"] != "acoustic":
        raise SystemExit(f"--experiment {args.experiment}: a {config['model']['type']} experiment, not acoustic")
    epoch = experiment.resolve_epoch(None if args.epoch is None else int(args.epoch))
    sentences = [line.strip() for line in HELDOUT.read_text().splitlines() if line.strip()][:args.sentences]
    speakers = [s["id"] for s in index["speakers"] if s["set"] == "modeling"]
    if args.speakers:
        unknown = sorted(set(args.speakers) - set(speakers))
        if unknown:
            raise SystemExit(f"--speakers: not modeling speakers of {args.experiment}: {', '.join(unknown)}")
        speakers = [s for s in speakers if s in args.speakers]
    runner_args = argparse.Namespace(data_path=args.data_path)
    runner = cli.trained_runner(runner_args, experiment, epoch, torch.device("cpu"))
    runner.config = {**runner.config, "test": {**runner.config["test"], "batch_size": args.batch_size}}
    if args.global_variance is not None:
        if args.global_variance == "on" and not hasattr(runner.model, "utterance_variance"):
            raise SystemExit(f"--global-variance on: {args.experiment} was trained without model.global_variance")
        runner.model_config.global_variance = args.global_variance == "on"
    if args.vocoder_temperature is not None:
        vocoder = runner.vocoder
        vocoder.config = {**vocoder.config, "test": {**vocoder.config["test"], "temperature": args.vocoder_temperature}}
    with tempfile.TemporaryDirectory(prefix="samplernn_pase-tts-bench-") as folder:
        records = []
        for s, speaker in enumerate(speakers):
            for k, sentence in enumerate(sentences):
                record = text_record(sentence, speaker, index, config["data"], Path(folder) / f"{s}-{k}")
                records.append({**record, "id": f"{speaker}_heldout_{k:02d}"})
        front_end = time.time() - started
        out_dir = args.output_dir or Path(folder) / "rendered"
        with new_inputs(runner, records):
            metrics = runner.test(epoch, out_dir, None, utterance_ids=[r["id"] for r in records])
    speaker_of = {r["id"]: r["speaker"] for r in records}
    rows = {name: summary(metrics["utterances"] if row is None else metrics["references"][row]["utterances"],
                          speaker_of) for name, row in ROWS.items()}
    tts, ceiling = rows["tts"], rows["espeak"]
    required = {
        "wer_at_most_2x_ceiling": None if tts["wer"] is None or ceiling["wer"] is None
        else tts["wer"] <= 2 * ceiling["wer"],
        "every_speaker_identified": tts["speakers_identified"] == len(speakers),
        "dnsmos_ovrl_at_least_1.5": tts["dnsmos_ovrl"] is not None and tts["dnsmos_ovrl"] >= 1.5}
    print(json.dumps({
        "experiment": args.experiment, "epoch": epoch, "vocoder": config["model"].get("vocoder_experiment"),
        "sentences": len(sentences), "speakers": speakers, "rows": rows,
        "global_variance": runner.model_config.global_variance,
        "vocoder_temperature": runner.vocoder.config["test"]["temperature"],
        "wer_ratio_to_ceiling": None if not ceiling["wer"] or tts["wer"] is None
        else round(tts["wer"] / ceiling["wer"], 3),
        "required": required, "passed": all(v is True for v in required.values()),
        "goal_wer_at_most_1.5x_ceiling": None if tts["wer"] is None or ceiling["wer"] is None
        else tts["wer"] <= 1.5 * ceiling["wer"],
        "seconds": {"front_end": round(front_end, 1), "total": round(time.time() - started, 1)},
        "output_dir": str(args.output_dir) if args.output_dir else None}))


if __name__ == "__main__":
    main()

"""A quick look at an acoustic experiment on new text: durations, features and WORLD intelligibility.

    python bench/acoustic_new_text.py --experiment tts [--sentences 10] [--speakers demo_f1 demo_m1]
                                      [--corpus-split test|train] [--no-wer] [--ablations] [--output-dir DIR]

Held-out sentences (samplernn_pase/data/sentences_heldout.txt; with --corpus-split the
split's own utterances of the speakers instead: `test`, or `train` to see the fit) are read
by eSpeak NG in a speaker's demo voice, as `synthesize --text` reads them. The demo corpus is eSpeak's speech, so that reading is the
ground truth of new text: its phone durations and WORLD features. Per utterance, and as means:

- duration RMSE (frames) of the duration model against eSpeak's durations, beside the
  per-symbol mean duration of the training split (the trivial baseline);
- MCD, F0 RMSE and V/UV error of the features predicted on eSpeak's durations (oracle),
  beside the speaker's per-symbol mean features;
- Whisper tiny.en WER of WORLD rendering (a) predicted features on predicted durations,
  (b) predicted features on eSpeak's durations, (c) eSpeak's own features.

`--ablations` adds, per utterance, the WER of WORLD rendering eSpeak's own features with one
group of columns replaced by the prediction (oracle durations: lf0, vuv, c0, c1-4, c5-39, bap,
all), and of eSpeak's features with the mel-cepstrum c0-c39 flattened to its mean through each
phone (what a model that knows each phone's features but not their movement would give), the
same means linearly interpolated between the phones' centre frames (`phone_interp`: movement
from phone to phone only), or smoothed by a moving average over 5, 11 and 21 frames: which
features, and how much of their movement inside the phones, the words need.

No vocoder runs, so it takes about a minute (a few seconds an utterance), not the
13 minutes of bench/text_to_speech.py: a loop for diagnosing the acoustic model.
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
from scipy.ndimage import uniform_filter1d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase import cli  # noqa: E402
from samplernn_pase.data.features import world_resynthesis  # noqa: E402
from samplernn_pase.data.synthesis_input import text_record  # noqa: E402
from samplernn_pase.experiment.folder import Experiment  # noqa: E402
from samplernn_pase.runners.acoustic import rmse  # noqa: E402

#: --ablations: eSpeak's features with these columns (data/features.py layout) predicted.
GROUPS = {"lf0": [0], "vuv": [1], "c0": [2], "c1_4": [3, 4, 5, 6], "c5_39": list(range(7, 42)), "bap": [42],
          "all": list(range(43))}
CEPSTRUM = slice(2, 42)
SMOOTHING_FRAMES = (5, 11, 21)

HELDOUT = Path(__file__).resolve().parents[1] / "samplernn_pase" / "data" / "sentences_heldout.txt"


def mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def phone_means(values: np.ndarray, phone_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the phones present, each one's centre frame, each one's mean of `values` (P, D))."""
    phones = np.unique(phone_index)
    centres = np.array([np.flatnonzero(phone_index == p).mean() for p in phones])
    means = np.stack([values[phone_index == p].mean(axis=0) for p in phones])
    return phones, centres, means


def centre_interpolated(values: np.ndarray, phone_index: np.ndarray) -> np.ndarray:
    """(T, D): each phone's mean of `values` placed at the phone's centre frame, linearly
    interpolated between the centres (held flat before the first and after the last)."""
    _, centres, means = phone_means(values, phone_index)
    frames = np.arange(len(values))
    return np.stack([np.interp(frames, centres, means[:, d]) for d in range(values.shape[1])], axis=1)


def ablations(prediction: dict) -> dict[str, np.ndarray]:
    """{name: features} of eSpeak's (the recording's) features, partly predicted or flattened."""
    real, predicted = prediction["real"], prediction["oracle"]
    out = {}
    for name, columns in GROUPS.items():
        out[f"swap_{name}"] = real.copy()
        out[f"swap_{name}"][:, columns] = predicted[:, columns]
    phones, _, means = phone_means(real[:, CEPSTRUM], prediction["phone_index"])
    out["phone_flat"] = real.copy()
    out["phone_flat"][:, CEPSTRUM] = means[np.searchsorted(phones, prediction["phone_index"])]
    out["phone_interp"] = real.copy()
    out["phone_interp"][:, CEPSTRUM] = centre_interpolated(real[:, CEPSTRUM], prediction["phone_index"])
    for width in SMOOTHING_FRAMES:
        out[f"smooth_{width}"] = real.copy()
        out[f"smooth_{width}"][:, CEPSTRUM] = uniform_filter1d(real[:, CEPSTRUM], width, axis=0, mode="nearest")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--experiments-path", type=Path, default=Path("experiments"))
    parser.add_argument("--data-path", type=Path, default=Path("data"))
    parser.add_argument("--epoch", type=int, default=None)
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--speakers", nargs="+", default=["demo_f1", "demo_m1"])
    parser.add_argument("--corpus-split", choices=("test", "train", "validation"), default=None,
                        help="that split's utterances of the speakers (at most --sentences each) instead of "
                             "held-out sentences")
    parser.add_argument("--no-wer", action="store_true", help="skip Whisper")
    parser.add_argument("--ablations", action="store_true",
                        help="also WER of eSpeak's features partly predicted, flattened per phone or smoothed")
    parser.add_argument("--output-dir", type=Path, default=None, help="write the WORLD wavs here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    experiment = Experiment(args.experiments_path, args.experiment)
    experiment.require()
    config, index = experiment.config(), experiment.data_index()
    epoch = experiment.resolve_epoch(args.epoch)
    runner = cli.trained_runner(argparse.Namespace(data_path=args.data_path), experiment, epoch,
                                torch.device("cpu"))
    params = runner.evaluation.params
    if args.corpus_split:
        items = [(u["id"], u["text"]) for speaker in args.speakers
                 for u in [u for u in index["utterances"]
                           if u["split"] == args.corpus_split and u["speaker"] == speaker][:args.sentences]]
    else:
        sentences = [line.strip() for line in HELDOUT.read_text().splitlines() if line.strip()][:args.sentences]
        items = []
        folder = tempfile.mkdtemp(prefix="samplernn_pase-new-text-")
        for speaker in args.speakers:
            for k, sentence in enumerate(sentences):
                record = text_record(sentence, speaker, index, config["data"], Path(folder) / f"{speaker}-{k}")
                record = {**record, "id": f"{speaker}_heldout_{k:02d}"}
                runner.store.add(record)
                items.append((record["id"], sentence))
    if not args.no_wer:
        from samplernn_pase.metrics.intelligibility import judge_intelligibility
    rows = []
    for utterance_id, text in items:
        prediction = runner.predict(utterance_id)
        metrics = runner.feature_metrics(prediction)
        row = {"id": utterance_id,
               "frames": [int(prediction["durations"].sum()), int(prediction["predicted_durations"].sum())],
               **{k: metrics[k] for k in ("duration_rmse_frames", "baseline_duration_rmse_frames",
                                          "oracle_mcd_db", "baseline_mcd_db", "oracle_f0_rmse_hz",
                                          "baseline_f0_rmse_hz", "oracle_vuv_error", "baseline_vuv_error")}}
        if not args.no_wer:
            renders = {"predicted": prediction["predicted"], "oracle": prediction["oracle"],
                       "espeak": prediction["real"], **(ablations(prediction) if args.ablations else {})}
            for name, features in renders.items():
                audio = world_resynthesis(features, params)
                row[f"wer_{name}"] = judge_intelligibility(audio, runner.store.sample_rate, text)["wer"]
                if args.output_dir:
                    from samplernn_pase.audio.io import write_wav
                    args.output_dir.mkdir(parents=True, exist_ok=True)
                    write_wav(args.output_dir / f"{utterance_id}.{name}.wav", audio, runner.store.sample_rate)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    truth = np.concatenate([runner.predict(i)["durations"] for i, _ in items])
    keys = [k for k in rows[0] if k not in ("id", "frames")]
    print(json.dumps({"experiment": args.experiment, "epoch": epoch, "utterances": len(rows),
                      "corpus_split": args.corpus_split,
                      "means": {k: mean(r[k] for r in rows) for k in keys},
                      "wer_clipped_at_1": {k[4:]: mean(min(r[k], 1.0) for r in rows) for k in keys
                                           if k.startswith("wer_")},
                      "frames_espeak_vs_predicted": [int(sum(r["frames"][0] for r in rows)),
                                                     int(sum(r["frames"][1] for r in rows))],
                      "phones": int(len(truth)),
                      "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()

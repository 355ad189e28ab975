"""Adapting a trained experiment to speakers it never trained on, against training from scratch.

    python bench/fine_tuning.py --source demo [--experiments-path experiments] [--data-path data]
                                [--config config.default.json] [--epochs 1] [--prefix adapt]
                                [--set data.train_seconds_per_speaker=20 ...]

Two experiments are made from the same config, with the source's adaptation speakers
(never trained on) made modeling speakers (`data.modeling_speakers` {"f": 4, "m": 4},
no adaptation set; `--set`):

- `<prefix>_finetuned`: `init --init-from SOURCE`: the source's weights; its speaker
  rows mapped by id, the new speakers' rows the mean of the trained ones;
- `<prefix>_scratch`: random weights, as every experiment started before.

`--draws N` judges N sampling draws of each (`test --seed`), since one draw of a
few cuts is noisy; `--judge-only` judges existing experiments again without training (a
draw already rendered is read, not rendered again).
`--set` adds overrides to both (e.g. `data.train_seconds_per_speaker=20`: a few
seconds of each speaker, the adaptation case); `--set-finetuned` to the fine-tuned one only (a fine-tuning
learning rate). Both train `--epochs` epochs on the same data (the same optimizer steps), then `test`
renders every test utterance (`test.utterances` 16). The judges' means over the test
utterances of the new speakers, and of the source's speakers, are printed as one JSON
line per experiment's row: the model, and the real recording and WORLD beside it.
`f0_rmse_common_hz` adds, for each experiment, the F0 RMSE of the new speakers' renders over
the frames that the recording and both experiments' renders of the same draw call voiced:
each experiment's own `f0_rmse_hz` is over its own voiced frames, and a model that leaves the
hard frames unvoiced (a V/UV error) scores a lower F0 RMSE for what it did not render.
Everything runs through the real CLI (`python -m samplernn_pase`), one thread per process.

Any family whose config trains on the demo corpus: for text to speech, the acoustic model of
`make demo` (`--source tts --config configs/acoustic.json`), with `--set
model.vocoder_experiment=NAME` a vocoder trained on all eight speakers (such as this bench's own
`<prefix>_finetuned` of a SampleRNN run). Its rows then add the predicted features' judges at
the recording's durations (`oracle_*`) and the durations', each beside the trivial baseline.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
JUDGES = ("dnsmos_ovrl", "wer", "speaker_similarity_own", "speaker_similarity_other", "speaker_identified",
          "mcd_db", "f0_rmse_hz", "vuv_error", "nll_bits",
          # the acoustic model's features at the recording's durations, and its durations, each
          # beside the trivial baseline (the speaker's mean features and duration per phone symbol)
          "oracle_mcd_db", "baseline_mcd_db", "oracle_f0_rmse_hz", "baseline_f0_rmse_hz",
          "oracle_vuv_error", "baseline_vuv_error", "duration_rmse_frames", "baseline_duration_rmse_frames")


def cli(args, *command: str) -> float:
    """Runs one CLI command; its wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "samplernn_pase", "--experiments-path", str(args.experiments_path),
                             "--data-path", str(args.data_path), *command], env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def means(metrics: dict, utterance_ids: list[str]) -> dict:
    """{row: {judge: mean over the utterances}} for the model and each reference row."""
    rows = {"model": metrics["utterances"], **{row: r["utterances"] for row, r in metrics["references"].items()}}
    out = {}
    for row, per_utterance in rows.items():
        out[row] = {}
        for judge in JUDGES:
            values = [per_utterance[u][judge] for u in utterance_ids
                      if u in per_utterance and per_utterance[u].get(judge) is not None]
            if values:
                out[row][judge] = round(float(np.mean(values)), 4)
    return out


def draw_folder(args, name: str, draw: int | None) -> Path:
    """Where `test` writes one draw of experiment `name` (draw None: `test`'s default seed)."""
    folder = args.experiments_path / name / "results" / f"epoch-{args.epochs}"
    return folder if draw is None else folder / f"seed-{draw}"


def judged(args, name: str, new_speakers: list[str], draw: int | None) -> dict:
    """One draw's judges of experiment `name` (draw None: `test`'s default seed; else `test --seed`),
    averaged over the new speakers' and over the trained speakers' test utterances."""
    folder = draw_folder(args, name, draw)
    if draw is not None and not (args.judge_only and (folder / "metrics.json").is_file()):
        cli(args, "--experiment-name", name, "test", "--epoch", str(args.epochs), "--seed", str(draw))
    index = json.loads((args.experiments_path / name / "data.json").read_text())
    speaker_of = {u["id"]: u["speaker"] for u in index["utterances"]}
    metrics = json.loads((folder / "metrics.json").read_text())
    rendered = sorted(metrics["utterances"])
    return {"new_speakers": means(metrics, [u for u in rendered if speaker_of[u] in new_speakers]),
            "trained_speakers": means(metrics, [u for u in rendered if speaker_of[u] not in new_speakers]),
            "utterances": {"new": sum(speaker_of[u] in new_speakers for u in rendered), "all": len(rendered)}}


def over_draws(draws: list[dict]) -> dict:
    """{speakers: {row: {judge: mean}}} of the first draw, plus `draws`: each judge's mean and
    standard deviation over all the draws."""
    result = {key: draws[0][key] for key in ("new_speakers", "trained_speakers", "utterances")}
    if len(draws) > 1:
        result["draws"] = {"count": len(draws)}
        for speakers in ("new_speakers", "trained_speakers"):
            result["draws"][speakers] = {
                row: {judge: {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}
                      for judge in figures
                      if len(values := [d[speakers][row][judge] for d in draws if judge in d[speakers][row]])
                      == len(draws)}
                for row, figures in draws[0][speakers].items()}
    return result


def common_f0(args, names: list[str], new_speakers: list[str]) -> dict:
    """{name: {"mean", "std" over the draws, "frames": the common frames of all draws}}: each
    draw's mean over the new speakers' rendered utterances of the F0 RMSE over the frames voiced in the recording and in every
    experiment's render of that draw (metrics.speech.compare, `f0_frames`)."""
    from samplernn_pase.metrics.speech import analyse, compare

    index = json.loads((args.experiments_path / names[0] / "data.json").read_text())
    params, speaker_of = index["feature_params"], {u["id"]: u["speaker"] for u in index["utterances"]}
    per_draw = {name: [] for name in names}
    frames = 0
    for draw in [None, *range(1, args.draws)]:
        folders = [draw_folder(args, name, draw) for name in names]
        utterances = sorted(u for u in json.loads((folders[0] / "metrics.json").read_text())["utterances"]
                            if speaker_of[u] in new_speakers)
        figures = {name: [] for name in names}
        for utterance in utterances:
            reference = analyse(soundfile.read(folders[0] / f"{utterance}.real.wav")[0], params)
            rendered = [analyse(soundfile.read(folder / f"{utterance}.wav")[0], params) for folder in folders]
            common = reference.f0 > 0
            for analysis in rendered:
                shared = min(len(common), len(analysis.f0))
                common[shared:] = False
                common[:shared] &= analysis.f0[:shared] > 0
            frames += int(common.sum())
            for name, analysis in zip(names, rendered):
                rmse = compare(analysis, reference, f0_frames=common)["f0_rmse_hz"]
                if rmse is not None:
                    figures[name].append(rmse)
        for name in names:
            per_draw[name].append(float(np.mean(figures[name])))
    return {name: {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                   "frames": frames} for name, values in per_draw.items()}


def study(args) -> dict:
    source_index = json.loads((args.experiments_path / args.source / "data.json").read_text())
    new_speakers = sorted(s["id"] for s in source_index["speakers"] if s["set"] == "adaptation")
    overrides = ["--set", 'data.modeling_speakers={"f": 4, "m": 4}', "--set", "data.adaptation_speakers=null",
                 "--set", "test.utterances=16", *[part for item in args.set for part in ("--set", item)]]
    result = {"source": args.source, "new_speakers": new_speakers, "epochs": args.epochs, "set": args.set,
              "set_finetuned": args.set_finetuned, "experiments": {}}
    for kind in ("finetuned", "scratch"):
        name = f"{args.prefix}_{kind}"
        seconds = {}
        if not (args.judge_only and (args.experiments_path / name).is_dir()):
            start = ["--init-from", args.source, *[part for item in args.set_finetuned for part in ("--set", item)]] \
                if kind == "finetuned" else []
            cli(args, "--experiment-name", name, "init", "--config-path", str(args.config), *overrides, *start)
            seconds["train"] = round(cli(args, "--experiment-name", name, "train", "--device", "cpu",
                                         "--max-epochs", str(args.epochs)), 1)
            seconds["test"] = round(cli(args, "--experiment-name", name, "test", "--epoch", str(args.epochs)), 1)
        draws = [judged(args, name, new_speakers, None)]
        draws += [judged(args, name, new_speakers, draw) for draw in range(1, args.draws)]
        result["experiments"][name] = {
            "steps": json.loads((args.experiments_path / name / "checkpoints" / "index.json").read_text())
            ["epochs"][str(args.epochs)]["iteration"],
            "seconds": seconds, **over_draws(draws)}
    for name, figure in common_f0(args, list(result["experiments"]), new_speakers).items():
        result["experiments"][name]["f0_rmse_common_hz"] = figure
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="the trained experiment to adapt (e.g. demo)")
    parser.add_argument("--experiments-path", type=Path, default=Path("experiments"))
    parser.add_argument("--data-path", type=Path, default=Path("data"))
    parser.add_argument("--config", type=Path, default=ROOT / "config.default.json",
                        help="the config of both new experiments (the source's architecture)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--prefix", default="adapt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an `init --set` override for both experiments (repeatable)")
    parser.add_argument("--set-finetuned", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for the fine-tuned experiment only (e.g. its learning rate)")
    parser.add_argument("--draws", type=int, default=1,
                        help="sampling draws judged per experiment: the default `test`, then "
                             "`test --seed 1..N-1`; their mean and standard deviation go under `draws`")
    parser.add_argument("--judge-only", action="store_true",
                        help="experiments that exist already are judged again, not made and trained")
    args = parser.parse_args()
    print(json.dumps(study(args)))


if __name__ == "__main__":
    main()

"""Voices never trained on: text to speech in an unseen speaker's voice from a few seconds of it.

    python bench/unseen_speakers.py --workspace DIR [--data-path data] [--sentences 5]
        [--seed-seconds 10 3] [--pase-epochs 5] [--vocoder-epochs 4] [--acoustic-epochs 30]
        [--seed 0] [--threads 1]

1. Trains, with the real CLI, in DIR/experiments/, on the demo corpus with 48 voices
   (`data.demo.num_speakers` 48, 20 sentences each from the 199 texts; 40 modeling
   speakers, 20 f + 20 m, and 8 adaptation speakers, 4 f + 4 m, whose audio no model
   trains on):
   - `pase48`: configs/pase.json, on the modeling speakers' training audio;
   - `vocoder48`: config.default.json (the demo's SampleRNN vocoder) with PASE speaker
     seeds (`conds_speaker_type: "pase"`) instead of a table of the speakers it trained
     on, at most `--vocoder-train-seconds` of each speaker's audio;
   - `tts48`: configs/acoustic_more_text.json (the acoustic model of the text-to-speech
     bench) with PASE speaker seeds, vocoder `vocoder48`.
   An experiment already in the workspace is reused (same settings) and `train` resumes it.
2. Says the first `--sentences` held-out sentences (samplernn_pase/data/sentences_heldout.txt,
   which no demo speaker reads) in each adaptation speaker's voice, rendered the way
   `synthesize --text` renders (bench/text_to_speech.py's path: runners/synthesis.new_inputs,
   one batched test). An unseen speaker is voiced from a seed of N seconds of its audio:
   the first N seconds of its training split (utterances sorted by id, what `init`
   computes seeds from). The seed gives the speaker's PASE vector (models/pase.speaker_seed)
   and the mean and standard deviation of its WORLD features over those seconds (the
   per-speaker normalization every model here reads its features through). Both are put,
   in memory, in place of what `init` computed for that speaker, in the acoustic model and
   in the vocoder, so nothing else of the speaker's audio reaches the rendering. Rows:
   - `unseen` (the `--seed-seconds` first, 10 s by default), `seed_3s`, ...: adaptation
     speakers from seeds of that length;
   - `unseen_pase_only`: the PASE vector of the first seed length with the modeling
     speakers' mean statistics: what the PASE vector alone carries;
   - `unseen_statistics_only`: the statistics of the first seed length with the modeling
     speakers' mean PASE vector: what the statistics alone carry;
   - `baseline`: no identity: the mean of the modeling speakers' seeds and of their
     statistics, for every adaptation speaker;
   - `modeling`: one sentence per modeling speaker (its own trained seed);
   - `ceiling`: eSpeak NG's own reading of the unseen speakers' sentences (the real
     recordings), judged the same way.
3. Judges each rendering with the test's judges: Resemblyzer's cosine to the speaker's own
   centroid (its real recordings) and the mean cosine to the others', identification by
   the nearest centroid among all 48 speakers, Whisper tiny.en's WER, DNSMOS OVRL.

Writes the renders of each row to DIR/rendered/<row>/<utterance id>.wav (and the test's
metrics.json there) and prints one JSON line: per row `identified` (share of sentences),
`own`, `other`, `wer`, `dnsmos_ovrl` and per speaker; the settings; the issue's
requirements (10 s seeds: unseen identified at 25 % or better, own above other for at least
6 of the 8 unseen speakers) with pass/fail; and the times.
"""

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pase_seed_duration import open_workspace, log  # noqa: E402

from samplernn_pase import cli  # noqa: E402
from samplernn_pase.data import features, hts_labels  # noqa: E402
from samplernn_pase.data.normalization import Accumulator  # noqa: E402
from samplernn_pase.data.speaker_seeds import speaker_train_seeds  # noqa: E402
from samplernn_pase.data.synthesis_input import text_record  # noqa: E402
from samplernn_pase.experiment.folder import Experiment  # noqa: E402
from samplernn_pase.experiment.weights import load_pase  # noqa: E402
from samplernn_pase.runners.synthesis import new_inputs  # noqa: E402

HELDOUT = ROOT / "samplernn_pase" / "data" / "sentences_heldout.txt"
PASE_NAME, VOCODER_NAME, ACOUSTIC_NAME = "pase48", "vocoder48", "tts48"
DATA = {"corpora": [{"type": "demo", "path": "demo48"}],
        "demo": {"num_speakers": 48, "sentences_per_speaker": 20, "more_sentences": True},
        "modeling_speakers": {"f": 20, "m": 20}, "adaptation_speakers": {"f": 4, "m": 4}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True, help="experiments/ and rendered/ go here")
    parser.add_argument("--data-path", type=Path, default=Path("data"),
                        help="--data-path of the CLI; the corpus is built into <data-path>/demo48")
    parser.add_argument("--sentences", type=int, default=5, help="held-out sentences per unseen speaker")
    parser.add_argument("--seed-seconds", type=float, nargs="+", default=[10.0, 3.0])
    parser.add_argument("--pase-epochs", type=int, default=5)
    parser.add_argument("--vocoder-epochs", type=int, default=4)
    parser.add_argument("--vocoder-train-seconds", type=float, default=8.0)
    parser.add_argument("--acoustic-epochs", type=int, default=30)
    parser.add_argument("--speaker-statistics", choices=["on", "off"], default="on",
                        help="the acoustic model also reads the speaker's feature statistics beside its PASE "
                             "seed (model.speaker_statistics)")
    parser.add_argument("--batch-size", type=int, default=40, help="utterances the vocoder generates side by side")
    parser.add_argument("--seed", type=int, default=0,
                        help="`seed` of the three experiments (it also draws the splits, so the seeds' audio): "
                             "the bench is deterministic, a run with another seed is another draw")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


# --- the three experiments ----------------------------------------------------------------


def shipped(path: str, args, **data) -> dict:
    config = json.loads((ROOT / path).read_text())
    config["data"].update({**DATA, **data})
    config["seed"] = args.seed
    return config


def pase_config(args) -> dict:
    config = shipped("configs/pase.json", args)
    config["training"]["max_epochs"] = args.pase_epochs
    config["test"]["period"] = None
    return config


def vocoder_config(args) -> dict:
    config = shipped("config.default.json", args, train_seconds_per_speaker=args.vocoder_train_seconds)
    config["model"].update({"conds_speaker_type": "pase", "pase_experiment": PASE_NAME,
                            "pase_epoch": args.pase_epochs})
    config["training"]["max_epochs"] = args.vocoder_epochs
    config["test"]["period"] = None
    return config


def acoustic_config(args) -> dict:
    config = shipped("configs/acoustic_more_text.json", args)
    config["model"].update({"conds_speaker_type": "pase", "pase_experiment": PASE_NAME,
                            "pase_epoch": args.pase_epochs, "vocoder_experiment": VOCODER_NAME,
                            "vocoder_epoch": args.vocoder_epochs,
                            "speaker_statistics": args.speaker_statistics == "on",
                            # per-speaker output layers and variances are a learned table's
                            # speakers', not a seed's: off, as measured
                            "speaker_output": False, "global_variance": False})
    config["training"]["max_epochs"] = args.acoustic_epochs
    config["test"]["period"] = None
    return config


# --- a voice from a seed ------------------------------------------------------------------


def seed_pool(index: dict, speaker: str) -> list[str]:
    """The speaker's training-split utterances sorted by id: where seeds come from
    (data/speaker_seeds.speaker_train_seeds takes the same)."""
    return sorted(u["id"] for u in index["utterances"] if u["speaker"] == speaker and u["split"] == "train")


def seed_statistics(store, utterance_ids: list[str], seconds: float) -> dict:
    """Mean and std (normalization.Accumulator, flags left as they are) of the raw WORLD
    features and of the real linguistic columns over the first `seconds` of the utterances."""
    frames_left = int(round(seconds * store.sample_rate / store.hop_length))
    acoustic_fields = store.index["acoustic_fields"]
    acoustic = Accumulator(len(acoustic_fields))
    linguistic = Accumulator(store.linguistic_real_dim)
    for utterance_id in utterance_ids:
        if frames_left <= 0:
            break
        utterance = store.load(utterance_id)
        speaker = utterance.speaker_index
        raw = store.raw_acoustic(utterance)[:frames_left].astype(np.float64)
        acoustic.add(raw.sum(0), np.square(raw).sum(0), len(raw))
        real = (utterance.linguistic_real[:frames_left] * store.linguistic_std[speaker]
                + store.linguistic_mean[speaker]).astype(np.float64)
        linguistic.add(real.sum(0), np.square(real).sum(0), len(real))
        frames_left -= len(raw)
    flags = tuple(acoustic_fields.index(f) for f in features.FLAG_FIELDS)
    unnormalized = tuple(hts_labels.FRAME_REAL_FIELDS.index(f) for f in hts_labels.UNNORMALIZED_FIELDS)
    acoustic_mean, acoustic_std = acoustic.mean_std(flags)
    linguistic_mean, linguistic_std = linguistic.mean_std(unnormalized)
    return {"acoustic_mean": acoustic_mean, "acoustic_std": acoustic_std,
            "linguistic_mean": linguistic_mean, "linguistic_std": linguistic_std,
            "seconds": acoustic.count * store.hop_length / store.sample_rate}


class Voices:
    """Puts a speaker's seed vector and statistics into the acoustic runner and its vocoder
    (in memory: the experiments' files are never rewritten), and takes them back."""

    def __init__(self, runner):
        self.runner, self.vocoder = runner, runner.vocoder
        self.saved = {}

    def rows(self, speaker: str) -> list[tuple]:
        """(store, speaker vectors, row) of the speaker in the acoustic runner and the vocoder."""
        return [(r.store, r.speaker_vectors, r.store.speakers[speaker]["index"]) for r in (self.runner, self.vocoder)]

    def put(self, speaker: str, vector: np.ndarray, statistics: dict) -> None:
        for store, vectors, row in self.rows(speaker):
            key = (id(store), row)
            if key not in self.saved:
                self.saved[key] = (store, vectors, row, vectors[row].clone(), store.acoustic_mean[row].copy(),
                                   store.acoustic_std[row].copy(),
                                   None if store.linguistic_real_dim == 0 else store.linguistic_mean[row].copy(),
                                   None if store.linguistic_real_dim == 0 else store.linguistic_std[row].copy())
            vectors[row] = torch.as_tensor(vector, dtype=vectors.dtype)
            store.acoustic_mean[row], store.acoustic_std[row] = statistics["acoustic_mean"], statistics["acoustic_std"]
            if store.linguistic_real_dim:
                store.linguistic_mean[row] = statistics["linguistic_mean"]
                store.linguistic_std[row] = statistics["linguistic_std"]

    def restore(self) -> None:
        for store, vectors, row, vector, mean, std, lmean, lstd in self.saved.values():
            vectors[row], store.acoustic_mean[row], store.acoustic_std[row] = vector, mean, std
            if lmean is not None:
                store.linguistic_mean[row], store.linguistic_std[row] = lmean, lstd
        self.saved.clear()


def mean_voice(runner, speakers: list[str]) -> tuple[np.ndarray, dict]:
    """The mean seed vector and statistics of `speakers` (the modeling ones): a voice of nobody."""
    store, rows = runner.store, [runner.store.speakers[s]["index"] for s in speakers]
    vector = runner.speaker_vectors[rows].mean(0).numpy()
    return vector, {"acoustic_mean": store.acoustic_mean[rows].mean(0), "acoustic_std": store.acoustic_std[rows].mean(0),
                    "linguistic_mean": store.linguistic_mean[rows].mean(0),
                    "linguistic_std": store.linguistic_std[rows].mean(0), "seconds": None}


# --- rendering and judging -------------------------------------------------------------


def render(runner, epoch: int, items: list[tuple[str, str]], out_dir: Path, folder: Path) -> dict:
    """(speaker, sentence) items said by the acoustic model + vocoder; utterance id -> metrics,
    and the references' per-utterance metrics (row "real": eSpeak's reading)."""
    index, data_config = runner.index, runner.config["data"]
    records = []
    for k, (speaker, sentence) in enumerate(items):
        record = text_record(sentence, speaker, index, data_config, folder / f"{out_dir.name}-{k}")
        records.append({**record, "id": f"{speaker}_heldout_{k:02d}"})
    with new_inputs(runner, records):
        metrics = runner.test(epoch, out_dir, None, utterance_ids=[r["id"] for r in records])
    speaker_of = {r["id"]: r["speaker"] for r in records}
    return {"model": metrics["utterances"], "real": metrics["references"]["real"]["utterances"],
            "speaker_of": speaker_of}


def summary(per_utterance: dict, speaker_of: dict) -> dict:
    def mean(values):
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 4) if values else None
    by_speaker = {}
    for utterance_id, metrics in per_utterance.items():
        by_speaker.setdefault(speaker_of[utterance_id], []).append(metrics)
    return {"identified": mean(m.get("speaker_identified") for m in per_utterance.values()),
            "own": mean(m.get("speaker_similarity_own") for m in per_utterance.values()),
            "other": mean(m.get("speaker_similarity_other") for m in per_utterance.values()),
            "wer": mean(m.get("wer") for m in per_utterance.values()),
            "dnsmos_ovrl": mean(m.get("dnsmos_ovrl") for m in per_utterance.values()),
            "sentences": len(per_utterance),
            "by_speaker": {s: {"identified": mean(m.get("speaker_identified") for m in ms),
                               "own": mean(m.get("speaker_similarity_own") for m in ms),
                               "other": mean(m.get("speaker_similarity_other") for m in ms)}
                           for s, ms in sorted(by_speaker.items())}}


def main() -> None:
    args = parse_args()
    started = time.time()
    workspace, data_path, runner_cli = open_workspace(args, "samplernn_pase-unseen-")
    trained = {}
    for name, config in ((PASE_NAME, pase_config(args)), (VOCODER_NAME, vocoder_config(args)),
                         (ACOUSTIC_NAME, acoustic_config(args))):
        trained[name] = round(runner_cli.init_and_train(name, config), 1)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    experiment = Experiment(workspace / "experiments", ACOUSTIC_NAME)
    epoch = experiment.resolve_epoch(None)
    runner = cli.trained_runner(argparse.Namespace(data_path=data_path), experiment, epoch, torch.device(args.device))
    runner.config = {**runner.config, "test": {**runner.config["test"], "batch_size": args.batch_size}}
    index = runner.index
    unseen = [s["id"] for s in index["speakers"] if s["set"] == "adaptation"]
    modeling = [s["id"] for s in index["speakers"] if s["set"] == "modeling"]
    sentences = [line.strip() for line in HELDOUT.read_text().splitlines() if line.strip()]
    unseen_items = [(s, sentences[k]) for s in unseen for k in range(args.sentences)]
    pase = load_pase(workspace / "experiments", PASE_NAME, args.pase_epochs)
    voices = Voices(runner)

    @functools.cache
    def seed_of(speaker, seconds):
        """The seed `init` would compute with `seconds`, and the statistics of the same audio
        (computed once: three rows read the first seed length)."""
        vector = speaker_train_seeds(pase, index, lambda i: runner.store.load(i).audio, [speaker], seconds)[speaker]
        return vector, seed_statistics(runner.store, seed_pool(index, speaker), seconds)

    rows, seed_seconds_used = {}, {}
    rendered_root = workspace / "rendered"
    with tempfile.TemporaryDirectory(prefix="samplernn_pase-unseen-") as folder:
        folder = Path(folder)
        first = args.seed_seconds[0]
        plans = [(f"seed-{seconds:g}s", seconds, "own") for seconds in args.seed_seconds]
        plans += [(f"seed-{first:g}s-pase-only", first, "pase_only"),
                  (f"seed-{first:g}s-statistics-only", first, "statistics_only"), ("baseline", None, "mean")]
        nobody = mean_voice(runner, modeling)
        ceiling = None
        for row, seconds, kind in plans:
            log(f"rendering {row}")
            for speaker in unseen:
                if kind == "mean":
                    voices.put(speaker, *nobody)
                else:
                    vector, statistics = seed_of(speaker, seconds)
                    seed_seconds_used.setdefault(row, []).append(round(statistics["seconds"], 2))
                    voices.put(speaker, nobody[0] if kind == "statistics_only" else vector,
                               nobody[1] if kind == "pase_only" else statistics)
            try:
                result = render(runner, epoch, unseen_items, rendered_root / row, folder)
            finally:
                voices.restore()
            rows[row] = summary(result["model"], result["speaker_of"])
            if ceiling is None:
                ceiling = summary(result["real"], result["speaker_of"])
        log("rendering modeling")
        modeling_items = [(s, sentences[k % len(sentences)]) for k, s in enumerate(modeling)]
        result = render(runner, epoch, modeling_items, rendered_root / "modeling", folder)
        rows["modeling"] = summary(result["model"], result["speaker_of"])
    main_row = rows[f"seed-{args.seed_seconds[0]:g}s"]
    own_above_other = sum(v["own"] is not None and v["other"] is not None and v["own"] > v["other"]
                          for v in main_row["by_speaker"].values())
    output = {
        "speakers": len(index["speakers"]), "unseen_speakers": unseen, "sentences": args.sentences,
        "unseen": main_row, "modeling": rows.pop("modeling"), "baseline": rows.pop("baseline"),
        "ceiling": ceiling,
        **{f"seed_{seconds:g}s": rows[f"seed-{seconds:g}s"] for seconds in args.seed_seconds[1:]},
        "unseen_pase_only": rows[f"seed-{first:g}s-pase-only"],
        "unseen_statistics_only": rows[f"seed-{first:g}s-statistics-only"],
        "seed_seconds_used": {row: [min(v), float(np.mean(v))] for row, v in seed_seconds_used.items()},
        "required": {"unseen_identified_at_least_25%": main_row["identified"] is not None
                     and main_row["identified"] >= 0.25,
                     "own_above_other_for_6_of_8": own_above_other >= 6},
        "own_above_other": own_above_other,
        "chance": round(1 / len(index["speakers"]), 4),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": {"training": trained, "total": round(time.time() - started, 1)},
        "rendered": str(rendered_root)}
    output["passed"] = all(output["required"].values())
    print(json.dumps(output))


if __name__ == "__main__":
    main()

"""PASE seed duration: MCD and speaker similarity against seconds of seed audio, end to end.

    python bench/pase_seed_duration.py [--workspace DIR] [--data-path data] \
        [--pase-epochs 10] [--samplernn-epochs 8] [--hidden-size 128] \
        [--train-seconds-per-speaker S] [--seed-seconds 1 3 10] [--markdown]

About 10 minutes with the defaults on an idle 2-core CPU (the README's table).

What it does, with the real commands and the real runner:

1. `init` + `train` a PASE experiment (`configs/pase.json`, `--pase-epochs`)
   and a SampleRNN experiment with PASE speakers (`configs/samplernn_pase.json`
   with `--hidden-size`, `--samplernn-epochs`, `--train-seconds-per-speaker`)
   in `<workspace>/experiments/`, through `python -m samplernn_pase`.
   An experiment already in the workspace is reused and `train` resumes it.
2. For each seed duration, every speaker's seed is recomputed with
   `compute_speaker_seeds` (the function `init` uses) and swapped into the
   loaded runner in memory (`runner.speaker_vectors`), then `runner.test`
   renders `--utterances-per-speaker` test utterances of every speaker
   (`--max-seconds` each), adaptation speakers (never trained on) and
   modeling speakers in one batch, into
   `<workspace>/seed-<s>s/`. The experiment's own `speaker_seeds.npz` (the
   seeds SampleRNN was trained with) is never rewritten, so the experiment
   stays as `init` made it, and every duration is rendered with the same
   weights and the same sampling noise (the runner seeds its generator with
   the config seed and the epoch): only the seed differs.
3. Seeds come from each speaker's training split *before*
   `train_seconds_per_speaker` caps it (the "seed pool": every utterance that
   is neither test nor validation; `prepare_data` run again without the cap,
   from the feature cache). The cap only shortens SampleRNN training; it must
   not decide how many seconds a seed can have. The seconds a seed actually
   used (less than asked when a speaker has less audio) are reported.

Per utterance it collects what `metrics.json` holds: `mcd_db`, `f0_rmse_hz`,
`vuv_error`, `nll_bits`, `dnsmos_ovrl`, `speaker_similarity` (cosine between
the PASE embedding of the generated audio and the seed that conditioned it:
circular, the same encoder made the seed) and the independent speaker
similarity from Resemblyzer, which does not move with the seed's length:

- `speaker_similarity_own`: generated audio vs. the centroid of its speaker's
  real recordings (metrics/evaluation.py, without the rendered utterance's own
  recording);
- `speaker_similarity_other`: the same against the other speakers' centroids,
  averaged (the floor: identity is carried when the previous number is clearly
  above this one); `speaker_identified`: the own centroid is the nearest;
- `real_speaker_similarity_own` / `_other` / `_identified`, `real_dnsmos_ovrl`:
  the real recording of the rendered utterance, judged the same way (the ceiling);
- `real_to_seed_similarity`: PASE cosine of that real recording to the seed
  (how well a seed of that length captures the speaker, in the encoder's space).

Each row also says whether its seeds equal the ones `init` wrote
(`same_as_training_seeds`): with no training cap, the row whose duration is
`pase_seed_seconds` must, which checks the in-memory path against `init`.

Prints one JSON line (settings, PASE and SampleRNN training summaries, one
row per seed duration and speaker set, runtimes); `--markdown` adds a table.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASE_NAME = "pase"
SAMPLERNN_NAME = "samplernn_pase"
SPEAKER_SETS = ("adaptation", "modeling")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None,
                        help="folder for experiments/ and rendered audio (default: a new temp dir, kept)")
    parser.add_argument("--data-path", type=Path, default=Path("data"),
                        help="--data-path of the CLI; the demo corpus is built into <data-path>/demo")
    parser.add_argument("--pase-epochs", type=int, default=10)
    parser.add_argument("--samplernn-epochs", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=128,
                        help="SampleRNN rnn_hidden_size (configs/samplernn_pase.json has 256)")
    parser.add_argument("--train-seconds-per-speaker", type=float, default=None,
                        help="cap on SampleRNN training audio per speaker (default: none); "
                             "seeds are not capped")
    parser.add_argument("--seed-seconds", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--utterances-per-speaker", type=int, default=2,
                        help="test utterances rendered per speaker")
    parser.add_argument("--max-seconds", type=float, default=2.0,
                        help="seconds rendered per utterance (test.max_seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    return parser.parse_args(argv)


# --- configs and the CLI ------------------------------------------------------------


def pase_config(args) -> dict:
    config = json.loads((ROOT / "configs" / "pase.json").read_text())
    config["training"]["max_epochs"] = args.pase_epochs
    config["test"]["period"] = args.pase_epochs     # test once, after the last epoch
    return config


def samplernn_config(args, pase_epoch: int | None = None) -> dict:
    """configs/samplernn_pase.json with this run's settings; `pase_epoch` pins the encoder."""
    config = json.loads((ROOT / "configs" / "samplernn_pase.json").read_text())
    config["model"].update({"pase_experiment": PASE_NAME, "pase_epoch": pase_epoch})
    if args.hidden_size:
        config["model"]["rnn_hidden_size"] = args.hidden_size
    cap = args.train_seconds_per_speaker
    config["data"]["train_seconds_per_speaker"] = cap if cap and cap > 0 else None
    config["training"]["max_epochs"] = args.samplernn_epochs
    config["test"].update({"period": None, "max_seconds": args.max_seconds})
    return config


class CLI:
    """`python -m samplernn_pase` in the workspace, as a user would run it."""

    def __init__(self, workspace: Path, data_path: Path, threads: int, device: str):
        self.workspace, self.data_path = workspace, data_path
        self.experiments_path = workspace / "experiments"
        self.threads, self.device = threads, device

    def run(self, name: str, *args: str) -> str:
        command = [sys.executable, "-m", "samplernn_pase", "--experiment-name", name,
                   "--experiments-path", str(self.experiments_path),
                   "--data-path", str(self.data_path), *args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        log(f"$ {' '.join(command[1:])}")
        result = subprocess.run(command, cwd=self.workspace, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"error: `{' '.join(command[1:])}` failed ({result.returncode}):\n"
                             f"{result.stderr[-3000:]}")
        return result.stdout

    def init_and_train(self, name: str, config: dict) -> float:
        """init (unless the experiment exists with the same settings), then train; seconds taken."""
        start = time.perf_counter()
        root = self.experiments_path / name
        if (root / "config.json").is_file():
            existing = json.loads((root / "config.json").read_text())
            for section in ("model", "data", "training"):
                for key, value in config[section].items():
                    if key != "max_epochs" and existing[section].get(key) != value:
                        raise SystemExit(f"error: {root} exists with {section}.{key} = "
                                         f"{existing[section].get(key)!r}, not {value!r}: "
                                         "use another --workspace")
            log(f"reusing {root}")
        else:
            path = self.workspace / f"{name}.json"
            path.write_text(json.dumps(config, indent=2))
            self.run(name, "init", "--config-path", str(path), "--num-workers", str(self.threads))
        self.run(name, "train", "--device", self.device,
                 "--max-epochs", str(config["training"]["max_epochs"]))
        return time.perf_counter() - start


def open_workspace(args, prefix: str) -> tuple[Path, Path, CLI]:
    """(workspace, data path, CLI) from --workspace (default: a new temporary folder) and --data-path."""
    workspace = (args.workspace or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    data_path = args.data_path.resolve()
    data_path.mkdir(parents=True, exist_ok=True)
    log(f"workspace: {workspace}")
    return workspace, data_path, CLI(workspace, data_path, args.threads, args.device)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- seeds and rendering --------------------------------------------------------------


def seed_pool(experiment, data_path: Path, threads: int):
    """(index, normalization) of the experiment's data without the training-seconds cap.

    Same seed and split settings, so test and validation utterances are the
    experiment's own (checked); the train split holds every other utterance.
    """
    from samplernn_pase.data.prepare import prepare_data
    config = experiment.config()
    data_config = {**config["data"], "train_seconds_per_speaker": None}
    index, normalization = prepare_data(data_config, data_path, config["seed"], threads,
                                        logging.getLogger("samplernn_pase.bench"))
    own = experiment.data_index()

    def held_out(i):
        return sorted((u["id"], u["split"]) for u in i["utterances"] if u["split"] != "train")

    if held_out(index) != held_out(own) or \
            [(s["id"], s["index"]) for s in index["speakers"]] != \
            [(s["id"], s["index"]) for s in own["speakers"]]:
        raise SystemExit("error: the seed pool's speakers or test/validation splits differ from "
                         f"{experiment.data_index_path}")
    return index, normalization


def seconds_available(index: dict) -> dict[str, float]:
    """Seconds of training-split audio per speaker id (what a seed may use)."""
    rate, hop = index["sample_rate"], index["hop_length"]
    seconds = {s["id"]: 0.0 for s in index["speakers"]}
    for utterance in index["utterances"]:
        if utterance["split"] == "train":
            seconds[utterance["speaker"]] += utterance["num_frames"] * hop / rate
    return seconds


def compute_seeds(config: dict, pool_index: dict, pool_normalization: dict, experiments_path: Path,
                  data_path: Path, seconds: float) -> np.ndarray:
    """Seeds of every speaker (rows = speaker indices) with `seconds` of audio, as `init` computes them."""
    from samplernn_pase.data.speaker_seeds import compute_speaker_seeds
    from samplernn_pase.experiment.weights import load_pase
    model_config = {**config["model"], "pase_seed_seconds": float(seconds)}
    pase = load_pase(experiments_path, model_config["pase_experiment"], model_config.get("pase_epoch"))
    arrays = compute_speaker_seeds(pase, model_config, pool_index, pool_normalization,
                                   data_path, logging.getLogger("samplernn_pase.bench"))
    return arrays["seeds"]


def load_runner(experiments_path: Path, name: str, data_path: Path, device: str):
    """The SampleRNN runner with the weights of the experiment's last epoch (as `test` loads it)."""
    from samplernn_pase.cli import make_runner
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.experiment.weights import load_weights
    experiment = Experiment(experiments_path, name).require()
    runner = make_runner(argparse.Namespace(data_path=data_path), experiment, device)
    epoch = experiment.resolve_epoch(None)
    load_weights(runner.model, experiment, epoch, runner.device)
    return experiment, runner, epoch


def render_with_seeds(runner, epoch: int, seeds: np.ndarray, utterance_ids: list[str],
                      out_dir: Path) -> dict[str, dict]:
    """runner.test with the seeds swapped in; per-utterance metrics of the model row (what
    metrics.json holds, Resemblyzer similarities included), the real recording's Resemblyzer
    similarities (the ceiling) and the PASE cosine of the real recording to the seed."""
    import torch
    from samplernn_pase.metrics.speaker import cosine_similarity
    from samplernn_pase.models.pase import embed

    trained = runner.speaker_vectors
    runner.speaker_vectors = torch.from_numpy(np.asarray(seeds, dtype=np.float32))
    try:
        metrics = runner.test(epoch, out_dir, None, utterance_ids=utterance_ids)
    finally:
        runner.speaker_vectors = trained
    rate = runner.index["sample_rate"]
    real_rows = metrics["references"]["real"]["utterances"]
    per_utterance = {}
    for utterance_id in utterance_ids:
        row = dict(metrics["utterances"][utterance_id])
        utterance = runner.store.load(utterance_id)
        real = utterance.audio[:round(row["seconds"] * rate)]
        for key in ("speaker_similarity_own", "speaker_similarity_other", "speaker_identified",
                    "dnsmos_ovrl"):
            row[f"real_{key}"] = real_rows[utterance_id][key]
        row["real_to_seed_similarity"] = cosine_similarity(embed(runner.pase, [real], rate),
                                                           seeds[utterance.speaker_index])
        per_utterance[utterance_id] = row
    return per_utterance


def mean_of(rows: list[dict], key: str):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
    return float(np.mean(values)) if values else None


# --- the study -------------------------------------------------------------------------


def study(args) -> dict:
    import torch
    from samplernn_pase.experiment.folder import Experiment, atomic_write_json
    from samplernn_pase.runners.rendering import choose_test_utterances

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    workspace, data_path, cli = open_workspace(args, "pase_seed_duration_")
    runtime = {"pase_s": cli.init_and_train(PASE_NAME, pase_config(args))}
    pase_experiment = Experiment(cli.experiments_path, PASE_NAME)
    # Pinned, so that a later `train` of the encoder cannot silently change the seeds of a reused
    # SampleRNN experiment (its config check then refuses the workspace).
    pase_epoch = pase_experiment.resolve_epoch(None)
    runtime["samplernn_s"] = cli.init_and_train(SAMPLERNN_NAME, samplernn_config(args, pase_epoch))

    render_start = time.perf_counter()
    experiments_path = cli.experiments_path
    experiment, runner, epoch = load_runner(experiments_path, SAMPLERNN_NAME, data_path, args.device)
    config = experiment.config()
    # Rendering settings of this run (a reused experiment may have been made with others).
    runner.config["test"]["max_seconds"] = args.max_seconds
    pool_index, pool_normalization = seed_pool(experiment, data_path, args.threads)
    available = seconds_available(pool_index)
    index = runner.index
    set_of = {s["id"]: s["set"] for s in index["speakers"]}
    utterance_ids = []
    for speaker_set in SPEAKER_SETS:
        count = args.utterances_per_speaker * sum(1 for s in set_of.values() if s == speaker_set)
        utterance_ids += choose_test_utterances(index, count, speaker_set)
    speaker_of = {u["id"]: u["speaker"] for u in index["utterances"]}
    runner.config["test"]["batch_size"] = len(utterance_ids)   # one batch: one pass of the RNN
    training_seeds = runner.speaker_vectors.numpy()     # what `init` wrote, SampleRNN trained with

    rows, per_duration = [], {}
    for seconds in args.seed_seconds:
        log(f"seed {seconds:g} s: computing seeds and rendering {len(utterance_ids)} utterances")
        seeds = compute_seeds(config, pool_index, pool_normalization, experiments_path, data_path,
                              seconds)
        same_as_training = bool(np.allclose(seeds, training_seeds, atol=1e-6))
        out_dir = workspace / f"seed-{seconds:g}s"
        per_utterance = render_with_seeds(runner, epoch, seeds, utterance_ids, out_dir)
        per_duration[f"{seconds:g}"] = per_utterance
        for speaker_set in SPEAKER_SETS:
            speakers = sorted(s for s, v in set_of.items() if v == speaker_set)
            used = [min(seconds, available[s]) for s in speakers]
            chosen = [m for u, m in per_utterance.items() if set_of[speaker_of[u]] == speaker_set]
            rows.append({
                "seed_seconds": seconds, "speakers": speaker_set, "num_speakers": len(speakers),
                "utterances": len(chosen), "same_as_training_seeds": same_as_training,
                "seconds_used_min": float(min(used)), "seconds_used_mean": float(np.mean(used)),
                **{key: mean_of(chosen, key) for key in (
                    "mcd_db", "dnsmos_ovrl", "speaker_similarity", "speaker_similarity_own",
                    "speaker_similarity_other", "speaker_identified", "real_to_seed_similarity",
                    "real_speaker_similarity_own", "real_speaker_similarity_other",
                    "real_speaker_identified", "real_dnsmos_ovrl", "f0_rmse_hz", "vuv_error",
                    "nll_bits")}})
    atomic_write_json(workspace / "study.json", {"rows": rows, "utterances": per_duration})
    runtime["render_s"] = time.perf_counter() - render_start
    runtime["total_s"] = time.perf_counter() - started

    pase_metrics_path = pase_experiment.epoch_results_dir(pase_epoch) / "metrics.json"
    if not pase_metrics_path.is_file():       # a reused encoder trained past its test period
        cli.run(PASE_NAME, "test", "--epoch", str(pase_epoch))
    pase_test = json.loads(pase_metrics_path.read_text())["mean"]
    samplernn_checkpoints = experiment.checkpoint_index()
    return {
        "bench": "pase_seed_duration",
        "settings": {
            "data_path": str(data_path), "workspace": str(workspace), "device": args.device,
            "threads": args.threads, "pase_epochs": pase_epoch,
            "pase_model": {k: v for k, v in pase_experiment.config()["model"].items()
                           if k in ("embedding_dim", "sinc_channels", "conv_channels", "chunk_seconds")},
            "samplernn_epochs": epoch,
            "samplernn_model": {k: config["model"][k] for k in (
                "ratios", "rnn_hidden_size", "embedding_size", "conditioning", "pase_seed_seconds")},
            "train_seconds_per_speaker": config["data"]["train_seconds_per_speaker"],
            "seed_pool_seconds_per_speaker": {s: round(v, 2) for s, v in sorted(available.items())},
            "utterances_per_speaker": args.utterances_per_speaker,
            "max_seconds": args.max_seconds,
            "temperature": config["test"]["temperature"],
            "seed": config["seed"]},
        "pase_test": pase_test,
        "samplernn_validation_nll_bits": samplernn_checkpoints.get("epochs", {}).get(
            str(epoch), {}).get("validation_loss"),
        "rows": rows,
        "runtime_s": {k: round(v, 1) for k, v in runtime.items()},
    }


def markdown(result: dict) -> str:
    def number(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["| seed (s) | speakers | seed seconds used (min / mean) | MCD (dB) | DNSMOS OVRL | "
             "PASE: generated vs seed | Resemblyzer: generated vs own speaker | "
             "Resemblyzer: generated vs other speakers | identified | PASE: real vs seed |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(
            f"| {row['seed_seconds']:g} | {row['speakers']} ({row['num_speakers']} spk, "
            f"{row['utterances']} utt) | {row['seconds_used_min']:.1f} / {row['seconds_used_mean']:.1f} | "
            f"{number(row['mcd_db'], 2)} | {number(row['dnsmos_ovrl'], 2)} | "
            f"{number(row['speaker_similarity'], 3)} | {number(row['speaker_similarity_own'], 3)} | "
            f"{number(row['speaker_similarity_other'], 3)} | {number(row['speaker_identified'], 2)} | "
            f"{number(row['real_to_seed_similarity'], 3)} |")
    ceilings = {row["speakers"]: row for row in result["rows"]}
    lines.append("")
    lines.append("The real recordings, judged the same way (Resemblyzer own / other, identified, "
                 "DNSMOS OVRL): " + "; ".join(
                     f"{k} {number(r['real_speaker_similarity_own'], 3)} / "
                     f"{number(r['real_speaker_similarity_other'], 3)}, "
                     f"{number(r['real_speaker_identified'], 2)}, {number(r['real_dnsmos_ovrl'], 2)}"
                     for k, r in ceilings.items()) + ".")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if any(s <= 0 for s in args.seed_seconds) or args.max_seconds <= 0:
        raise SystemExit("error: --seed-seconds and --max-seconds must be positive")
    if min(args.pase_epochs, args.samplernn_epochs, args.utterances_per_speaker, args.threads) < 1:
        raise SystemExit("error: epochs, --utterances-per-speaker and --threads must be at least 1")
    from samplernn_pase.errors import UserError
    try:
        result = study(args)
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(result))
    if args.markdown:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

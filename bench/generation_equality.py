"""Generation before and after a change: the same checkpoint, `test` run by both checkouts.

    python bench/generation_equality.py --before /work/wt/before --after . --work /tmp/geneq \\
        [--train-with before] [--families samplernn melnet] [--lpc]

For each family: a tiny config is `init`ed and trained for one short epoch ONCE, by the
`--train-with` checkout (default: --before); the experiment folder is copied twice and
`test` renders the last checkpoint with each checkout (the real CLI, in a subprocess,
one thread). Every wav `test` wrote is compared: sha256 equal, and the largest |difference|
of the samples (`generated`: the model's own wavs among them, not
the recordings or their WORLD / Griffin-Lim references); so are the numbers of metrics.json. Prints one JSON line.

Families: `samplernn` (no linear prediction, no harmonic source: the generation the
vocoder issue left alone), `samplernn_lpc` (config.default.json's source-filter vocoder at
tiny widths), `melnet` (configs/melnet.json at tiny widths).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

TINY_SAMPLERNN = {"rnn_hidden_size": 32, "embedding_size": 8, "mlp_layers": 1, "conds_size": 8,
                  "speaker_embedding_size": 4}
TINY_DATA = {"train_seconds_per_speaker": 1.5, "validation_seconds_per_speaker": 1.0,
             "test_seconds_per_speaker": 1.0}


def family_config(family: str, checkout: Path) -> dict:
    """The tiny config of a family, read from the training checkout's shipped configs."""
    if family.startswith("samplernn"):
        config = json.loads((checkout / "config.default.json").read_text())
        config["model"].update(TINY_SAMPLERNN)
        if family == "samplernn":
            config["model"].update({"lpc_order": 0, "harmonic_source": False})
        config["training"].update({"batch_size": 3, "sequence_length": 4})
        config["test"].update({"utterances": 2, "max_seconds": 0.1})
    else:
        config = json.loads((checkout / "configs" / "melnet.json").read_text())
        config["model"].update({"n_mels": 16, "tiers": 3, "layers": [1, 1, 1], "hidden_size": 8,
                                "gmm_components": 2, "chunk_frames": 16})
        config["training"].update({"batch_size": 4})
        config["test"].update({"utterances": 2, "max_seconds": 0.32})
    config["data"].update(TINY_DATA)
    config["training"].update({"max_epochs": 1, "log_period": 1})
    config["test"]["period"] = 1000       # no rendering while training: `test` does it
    return config


def cli(checkout: Path, work: Path, data: Path, name: str, *args: str) -> None:
    command = [sys.executable, "-m", "samplernn_pase", "--experiment-name", name,
               "--experiments-path", str(work / "experiments"), "--data-path", str(data), *args]
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def numbers(value, prefix=""):
    """metrics.json flattened to {path: float}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): float(value)} if isinstance(value, (int, float)) else {}


def gap(x: float, y: float) -> float:
    """|x - y|, 0 for two NaNs, inf for one."""
    if np.isnan(x) and np.isnan(y):
        return 0.0
    return float(np.nan_to_num(abs(x - y), nan=np.inf))


def compare(first: Path, second: Path) -> dict:
    """Every wav and metrics.json under the two results folders, file by file."""
    wavs = sorted(p.relative_to(first) for p in first.rglob("*.wav"))
    missing = [str(p) for p in wavs if not (second / p).exists()]
    missing += [str(p.relative_to(second)) for p in second.rglob("*.wav") if not (first / p.relative_to(second)).exists()]
    equal, max_diff = 0, 0.0
    for path in wavs:
        if not (second / path).exists():
            continue
        a, b = (first / path).read_bytes(), (second / path).read_bytes()
        equal += hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
        x, _ = soundfile.read(first / path, dtype="float64")
        y, _ = soundfile.read(second / path, dtype="float64")
        max_diff = max(max_diff, float(np.abs(x - y).max()) if x.shape == y.shape else float("inf"))
    metric_diff, metric_count = 0.0, 0
    for path in sorted(first.rglob("metrics.json")):
        a = numbers(json.loads(path.read_text()))
        b = numbers(json.loads((second / path.relative_to(first)).read_text()))
        metric_count += len(a)
        metric_diff = max([metric_diff] + [gap(a[k], b.get(k, np.inf)) for k in a])
    generated = sum(not p.name.endswith((".real.wav", ".world.wav", ".griffin_lim.wav")) for p in wavs)
    return {"wavs_compared": len(wavs), "generated": generated, "sha256_equal": equal, "max_abs_diff": max_diff, "missing": missing,
            "metrics_compared": metric_count, "metrics_max_abs_diff": metric_diff}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--train-with", choices=["before", "after"], default="before")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data/ is kept between runs)")
    parser.add_argument("--families", nargs="+", default=["samplernn", "melnet"],
                        choices=["samplernn", "samplernn_lpc", "melnet"])
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    work, data = args.work.resolve(), args.work.resolve() / "data"
    data.mkdir(parents=True, exist_ok=True)
    report = {"before": str(sides["before"]), "after": str(sides["after"]), "trained_with": args.train_with}
    for family in args.families:
        trainer = sides[args.train_with]
        train_dir = work / f"train-{args.train_with}"
        shutil.rmtree(train_dir / "experiments" / family, ignore_errors=True)
        (train_dir / "experiments").mkdir(parents=True, exist_ok=True)
        (train_dir / f"{family}.json").write_text(json.dumps(family_config(family, trainer)))
        cli(trainer, train_dir, data, family, "init", "--config-path", str(train_dir / f"{family}.json"))
        cli(trainer, train_dir, data, family, "train")
        results = {}
        for side, checkout in sides.items():
            side_dir = work / f"test-{side}" / "experiments"
            shutil.rmtree(side_dir / family, ignore_errors=True)
            side_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(train_dir / "experiments" / family, side_dir / family)
            shutil.rmtree(side_dir / family / "results", ignore_errors=True)
            cli(checkout, side_dir.parent, data, family, "test")
            results[side] = side_dir / family / "results"
        report[family] = compare(results["before"], results["after"])
        print(f"{family}: {json.dumps(report[family])}", file=sys.stderr, flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""PASE training steps per second: worker targets in the forward pass (before) vs. in the loader.

Before (the old path, still what `PASE.forward(wave)` does without targets): every
step computes WORLD F0 and the other targets of its chunks inside the step. After
(what `train` does): the loader computes them (data/pase_chunks.py, ChunkTargets), with
WORLD F0 computed once per utterance and sliced per chunk, optionally read ahead in
a thread (`train --num-workers`). Same model, same chunks, same number of epochs,
measured in one run; F0 with the data config's default settings. Audio: synthetic voiced utterances (no corpus needed). Prints
one JSON line.

    python bench/pase_training.py [--epochs 3] [--utterances 24] [--threads 2]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samplernn_pase.data.features import utterance_f0  # noqa: E402
from samplernn_pase.data.random_chunks import RandomChunkLoader  # noqa: E402
from samplernn_pase.experiment.config import fill_defaults, load_schema  # noqa: E402
from samplernn_pase.models.pase import PASE, PASEConfig  # noqa: E402
from samplernn_pase.data.pase_chunks import ChunkTargets  # noqa: E402
from samplernn_pase.training.prefetch import Prefetcher  # noqa: E402


def voiced_utterances(count, sample_rate, seed=0):
    """Harmonic tones with gliding pitch and pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    utterances = {}
    for k in range(count):
        n = int(rng.uniform(2.0, 4.0) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(90, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = np.sin(2 * np.pi * rng.uniform(1, 3) * t) > -0.3
        wave = sum(np.sin(h * phase) / h for h in range(1, 8)) * voiced
        utterances[f"u{k}"] = (0.2 * wave + 0.01 * rng.normal(size=n)).astype(np.float32)
    return utterances


def targets_in_step(model, data_config, wave):
    """The old path: WORLD F0 and the other targets of every chunk, inside the step."""
    f0 = np.stack([utterance_f0(row, data_config, model.hop)[0] for row in wave.numpy()])
    return model.targets(wave, f0)


def measure(config, utterances, epochs, batch_size, targets_in_loader, read_ahead):
    torch.manual_seed(0)
    model = PASE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    chunk = int(config.chunk_seconds * config.sample_rate)
    data_config = fill_defaults(load_schema("data"), {"sample_rate": config.sample_rate})
    targets = ChunkTargets(config, utterances.__getitem__, data_config) if targets_in_loader else None
    steps, per_epoch = 0, []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        loader = RandomChunkLoader(utterances.__getitem__, list(utterances),
                                   [len(w) for w in utterances.values()], batch_size, chunk, 0, epoch,
                                   offset_step=targets.hop if targets else 160, targets_of=targets)
        batches = Prefetcher(loader, 2) if read_ahead else loader
        for batch in batches:
            optimizer.zero_grad()
            losses = model(batch["chunk"], batch["targets"] if targets else targets_in_step(model, data_config,
                                                                                            batch["chunk"]))
            losses["total"].backward()
            optimizer.step()
            steps += 1
        per_epoch.append(len(loader) / (time.perf_counter() - epoch_started))
    return {"steps": steps, "steps_per_second": steps / (time.perf_counter() - started),
            "steps_per_second_by_epoch": [round(v, 3) for v in per_epoch]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "pase.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_section = json.loads(args.config.read_text())["model"]
    config = PASEConfig.from_dict(model_section)
    utterances = voiced_utterances(args.utterances, config.sample_rate)
    runs = {
        "before_targets_in_forward": measure(config, utterances, args.epochs, args.batch_size, False, False),
        "after_targets_in_loader": measure(config, utterances, args.epochs, args.batch_size, True, False),
        "after_targets_in_loader_read_ahead": measure(config, utterances, args.epochs, args.batch_size,
                                                      True, True),
    }
    before = runs["before_targets_in_forward"]["steps_per_second"]
    result = {"bench": "pase_training", "config": str(args.config.name), "epochs": args.epochs,
              "utterances": args.utterances, "audio_seconds": round(sum(map(len, utterances.values()))
                                                                  / config.sample_rate, 1),
              "batch_size": args.batch_size, "chunk_seconds": config.chunk_seconds,
              "threads": args.threads, "torch": torch.__version__, **runs,
              "speedup": {name: round(run["steps_per_second"] / before, 3) for name, run in runs.items()}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmark of MelNet: training throughput and sampling time, optionally beside the seed's.

    python bench/melnet.py --n-mels 64 --frames 64 --tiers 4 --layers 4 2 2 2 \
        --hidden-size 64 --threads 2 --baseline-path bench/_seed_melnet

prints one JSON line. `train_frames_per_s`: full-resolution spectrogram
frames per second through forward + backward + Adam step of all tiers.
`sample_seconds`: one full multiscale generation of `--batch-size`
spectrograms of `--frames` frames.

Baseline: the seed's MelNet (github jgarciapueyo/MelNet-SpeechGeneration,
checked out under `--baseline-path`, never committed). Its `MelNet.sample`
runs the whole tier over the spectrogram generated so far once per value, so
at 64 x 64 it takes far too long to run in a benchmark; its time is
estimated transparently instead: for every tier, the seed's own loop body
(tier forward over the first i+1 frames + `sample_gmm_batch` + the value
copy) is timed at `--baseline-points` evenly spaced frame counts i, linearly
interpolated over all frame counts and multiplied by the values per frame.
With `--baseline-check-frames N` the seed's real `MelNet.sample` is also run
end to end at N frames next to the same estimate, to show how close it is;
`--baseline-full` runs it end to end at the requested size.
Note on `layers`: the seed counts its input layer as one of a tier's layers
(layers=4 gives 3 recurrent layers); here `layers` counts recurrent delayed
layers, so the same numbers give this model more work than the seed.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplernn_pase.models.melnet import MelNet, MelNetConfig  # noqa: E402
from samplernn_pase.models.recurrent import generation_threads  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(model, args, device):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    mel = torch.randn(args.train_batch_size, args.frames, args.n_mels, device=device)

    def step():
        loss, _, _ = model(mel)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < args.train_seconds:
        step()
        steps += 1
    sync(device)
    elapsed = time.perf_counter() - start
    return args.train_batch_size * args.frames * steps / elapsed, steps


def bench_sample(model, args, device, threads=1):
    model.eval()
    model.sample(args.batch_size, model.time_factor * 2, threads=threads)  # warm-up
    times = []
    for _ in range(args.sample_repeats):
        sync(device)
        start = time.perf_counter()
        mel = model.sample(args.batch_size, args.frames, threads=threads)
        sync(device)
        times.append(time.perf_counter() - start)
    assert mel.shape == (args.batch_size, args.frames, args.n_mels)
    return min(times)


# --- the seed -----------------------------------------------------------------------


def load_seed(path: Path):
    """The seed's MelNet class and helpers; its yaml/attrdict hyper-parameter module is stubbed."""
    sys.path.insert(0, str(path))
    stub = types.ModuleType("src.utils.hparams")
    stub.HParams = dict  # only used in type annotations by MelNet.sample
    sys.modules["src.utils.hparams"] = stub
    from src.model.GMM import sample_gmm_batch
    from src.model.MelNet import MelNet as SeedMelNet
    from src.utils import tierutil
    return SeedMelNet, sample_gmm_batch, tierutil


def seed_run(seed, args, frames, device):
    """The seed's real MelNet.sample, end to end (seconds)."""
    hp = types.SimpleNamespace(device=device)
    with tempfile.TemporaryDirectory() as out:
        synthesis = types.SimpleNamespace(output_path=out)
        logger = logging.getLogger("seed_melnet")
        logger.setLevel(logging.WARNING)
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            seed.sample(hp, synthesis, "bench", logger, args.batch_size, frames)
        sync(device)
        return time.perf_counter() - start


def seed_estimate(seed, sample_gmm_batch, tierutil, args, frames, device):
    """Estimated seconds of the seed's MelNet.sample from timed samples of its loop body."""
    B, G = args.batch_size, args.tiers
    total, measured, steps_total, per_tier = 0.0, 0, 0, {}
    with torch.no_grad():
        for k in range(1, G + 1):
            n_freq = tierutil.get_size_freqdim_of_tier(n_mels=args.n_mels, n_tiers=G, tier=k)
            n_frames = tierutil.get_size_timedim_of_tier(timesteps=frames, n_tiers=G, tier=k)
            lower = torch.randn(B, n_freq, n_frames, device=device)
            points = sorted({round(p) for p in np.linspace(0, n_frames - 1, args.baseline_points)})
            costs = []
            for i in points:
                x = torch.randn(B, n_freq, i + 1, device=device)
                j = n_freq // 2

                def body():  # the seed's inner loop, verbatim in effect
                    params = seed.tiers[k - 1](x) if k == 1 else seed.tiers[k - 1](x, lower)
                    new = sample_gmm_batch(*params)
                    x[:, j, i] = new[:, j, i]

                body()  # warm-up
                samples = []
                for _ in range(args.baseline_repeats):
                    sync(device)
                    start = time.perf_counter()
                    body()
                    sync(device)
                    samples.append(time.perf_counter() - start)
                measured += args.baseline_repeats
                costs.append(min(samples))  # min, as for our sample_seconds
            tier_seconds = n_freq * float(np.interp(np.arange(n_frames), points, costs).sum())
            per_tier[k] = round(tier_seconds, 3)
            total += tier_seconds
            steps_total += n_freq * n_frames
    return total, {"timed_steps": measured, "steps_of_full_sample": steps_total,
                   "seconds_per_tier": per_tier}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--tiers", type=int, default=4)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 2, 2, 2])
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--gmm-components", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="spectrograms sampled at once")
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--train-seconds", type=float, default=5.0)
    parser.add_argument("--sample-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline-path", type=Path, default=None,
                        help="checkout of the seed's MelNet-SpeechGeneration (e.g. bench/_seed_melnet)")
    parser.add_argument("--baseline-points", type=int, default=5,
                        help="frame counts per tier at which the seed's per-value step is timed")
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--baseline-check-frames", type=int, default=0,
                        help="also run the seed's real MelNet.sample at this many frames, "
                             "next to the estimate for the same size")
    parser.add_argument("--baseline-full", action="store_true",
                        help="run the seed's real MelNet.sample at the full size (slow)")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = MelNetConfig(n_mels=args.n_mels, tiers=args.tiers, layers=args.layers,
                          hidden_size=args.hidden_size, gmm_components=args.gmm_components,
                          chunk_frames=args.frames)
    model = MelNet(config).to(device)
    result = {"n_mels": args.n_mels, "frames": args.frames, "tiers": args.tiers,
              "layers": args.layers, "hidden_size": args.hidden_size,
              "gmm_components": args.gmm_components, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "device": str(device),
              "mkl_cbwr": os.environ.get("MKL_CBWR", "default"),
              "parameters": sum(p.numel() for p in model.parameters())}
    if not args.skip_train:
        result["train_frames_per_s"], result["train_steps"] = bench_train(model, args, device)
        result["train_batch_size"] = args.train_batch_size
    result["sample_seconds"] = bench_sample(model, args, device)
    if device.type == "cpu" and torch.get_num_threads() > 1:
        # MelNet.sample runs its tiny per-value steps on one intra-op thread; for the record,
        # the same sampling with all --threads
        result["sample_seconds_all_threads"] = bench_sample(model, args, device, threads=None)

    if args.baseline_path is not None:
        warnings.filterwarnings("ignore")  # the seed's checkpoint() calls warn on every step
        SeedMelNet, sample_gmm_batch, tierutil = load_seed(args.baseline_path.resolve())
        torch.manual_seed(0)
        seed = SeedMelNet(n_tiers=args.tiers, layers=args.layers, hidden_size=args.hidden_size,
                          gmm_size=args.gmm_components, freq=args.n_mels).to(device).eval()
        baseline = {"parameters": sum(p.numel() for p in seed.parameters()),
                    "layers_note": "seed counts its input layer in `layers`: "
                                   f"{[n - 1 for n in args.layers]} recurrent layers vs ours "
                                   f"{args.layers}"}
        # the seed's big per-value passes may or may not profit from threads: it gets the
        # faster of --threads and 1, as our sampling does
        by_threads = {}
        for threads in sorted({torch.get_num_threads(), 1}):
            with generation_threads(device, threads=threads):
                if args.baseline_full:
                    by_threads[threads] = (seed_run(seed, args, args.frames, device), {})
                else:
                    by_threads[threads] = seed_estimate(seed, sample_gmm_batch, tierutil, args,
                                                        args.frames, device)
        best = min(by_threads, key=lambda t: by_threads[t][0])
        baseline.update(sample_seconds=by_threads[best][0], threads=best,
                        sample_seconds_by_threads={t: v[0] for t, v in by_threads.items()},
                        estimated=not args.baseline_full, **by_threads[best][1])
        if not args.baseline_full:
            baseline["method"] = (
                "per tier, the seed's per-value loop body (tier forward over the frames so far + "
                "sample_gmm_batch) timed (min of repeats) at evenly spaced frame counts, "
                "linearly interpolated over every frame count, times values per frame")
        if args.baseline_check_frames:
            check = args.baseline_check_frames
            with generation_threads(device, threads=best):
                estimate, _ = seed_estimate(seed, sample_gmm_batch, tierutil, args, check, device)
                measured = seed_run(seed, args, check, device)
            baseline["check"] = {"frames": check, "threads": best,
                                 "measured_sample_seconds": measured,
                                 "estimated_sample_seconds": estimate}
        result["baseline"] = baseline
        result["sample_speedup"] = baseline["sample_seconds"] / result["sample_seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()

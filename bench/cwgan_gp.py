"""Benchmark of the conditional WGAN-GP generators: mels per second, deep vs. strips.

    python bench/cwgan_gp.py --threads 1 --batch-sizes 1 16

prints one JSON line. For every batch size, generated mels per second
(n_mels x frames crops, generator in eval mode, no gradients) of:

- `deep`: the DCGAN generator making the whole crop;
- `strips`: the seed's shallow variant, `--strips` narrow generators each
  making frames / strips frames, as ONE network of grouped convolutions;
- `strips_loop` (the baseline the seed measured): the same strip generators
  as separate modules called one after the other in a Python loop.

and the ratios strips / deep and strips / strips_loop. The shapes default to
configs/cwgan_gp.json. Each timing is the median of `--repeats` runs of
`--iterations` generator calls after a warm-up, in CPU time on the CPU (the process's,
so waiting for a shared core is not counted) and wall time on a GPU.
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplernn_pase.models.cwgan_gp import CWGANGPConfig, MelGenerator  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mels_per_second(generate, batch_size, args, device) -> float:
    """On the CPU, per the process's CPU time (steady while other processes share the cores:
    waiting for a core is not counted); on a GPU, per wall time."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    generate()
    sync(device)
    times = []
    for _ in range(args.repeats):
        start = clock()
        for _ in range(args.iterations):
            generate()
        sync(device)
        times.append(clock() - start)
    return batch_size * args.iterations / statistics.median(times)


def main():
    config_file = json.loads((Path(__file__).resolve().parents[1] / "configs" / "cwgan_gp.json").read_text())
    model = config_file["model"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-mels", type=int, default=model["n_mels"])
    parser.add_argument("--frames", type=int, default=model["frames"])
    parser.add_argument("--scales", type=int, default=model["scales"])
    parser.add_argument("--generator-channels", type=int, default=model["generator_channels"])
    parser.add_argument("--strips", type=int, default=model["strips"])
    parser.add_argument("--strip-channels", type=int, default=model["strip_channels"])
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = CWGANGPConfig(n_mels=args.n_mels, frames=args.frames, label_sizes=(args.speakers, 2),
                           noise_size=model["noise_size"], label_embedding_size=model["label_embedding_size"],
                           scales=args.scales, generator_channels=args.generator_channels,
                           strips=args.strips, strip_channels=args.strip_channels)
    strip_config = replace(config, frames=args.frames // args.strips)
    generators = {
        "deep": MelGenerator(config, 1, args.generator_channels),
        "strips": MelGenerator(config, args.strips, args.strip_channels),
    }
    loop = [MelGenerator(strip_config, 1, args.strip_channels).to(device).eval()
            for _ in range(args.strips)]
    for generator in generators.values():
        generator.to(device).eval()
    parameters = {name: sum(p.numel() for p in g.parameters()) for name, g in generators.items()}
    parameters["strips_loop"] = sum(p.numel() for g in loop for p in g.parameters())
    results = {}
    with torch.no_grad():
        for batch_size in args.batch_sizes:
            noise = torch.randn(batch_size, config.noise_size, device=device)
            labels = torch.stack([torch.randint(0, args.speakers, (batch_size,)),
                                  torch.randint(0, 2, (batch_size,))], 1).to(device)
            rates = {name: mels_per_second(lambda g=g: g(noise, labels), batch_size, args, device)
                     for name, g in generators.items()}
            rates["strips_loop"] = mels_per_second(
                lambda: torch.cat([g(noise, labels) for g in loop], dim=3), batch_size, args, device)
            results[str(batch_size)] = {
                "mels_per_s": {name: round(rate, 1) for name, rate in rates.items()},
                "strips_over_deep": round(rates["strips"] / rates["deep"], 2),
                "strips_over_strips_loop": round(rates["strips"] / rates["strips_loop"], 2)}
    print(json.dumps({"benchmark": "cwgan_gp_generators", "device": str(device), "threads": args.threads,
                      "mel_shape": [args.n_mels, args.frames], "scales": args.scales,
                      "deep_channels": args.generator_channels, "strips": args.strips,
                      "strip_channels": args.strip_channels, "parameters": parameters,
                      "by_batch_size": results}))


if __name__ == "__main__":
    main()

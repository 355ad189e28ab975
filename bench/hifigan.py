"""Benchmark of the HiFi-GAN vocoder: training throughput and synthesis speed.

    python bench/hifigan.py --config configs/hifigan.json --threads 1 --batch-sizes 1 8

prints one JSON line:

- `train_segments_per_s`: training segments (model.segment_frames mel frames
  and their audio) per second through one training step as the runner takes
  it (generator forward; discriminators' LSGAN loss, backward, AdamW step;
  generator's adversarial + feature matching + mel loss, backward, AdamW step),
  at training.batch_size;
- `synthesis`: for every batch size, the real-time factor (seconds of
  computing per second of audio, below 1 is faster than real time) of the
  inference generator (weight norm folded) on `--seconds`-long mels, with
  `--threads` threads, and `x_real_time` (its inverse: seconds of audio per
  second, all utterances of the batch together).

On the CPU every time is the process's CPU time divided by the threads used
(`time.process_time`: waiting for a core that another process holds is not
counted, so the figure is steady on a shared machine); on a GPU, wall time.
The model's widths come from the config (`--version` overrides it).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplernn_pase.models.hifigan import HiFiGAN, HiFiGANConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work, repeats: int, device, threads: int) -> float:
    """Median seconds of `work()` after a warm-up: CPU time / threads on the CPU, wall on a GPU."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    scale = threads if device.type == "cpu" else 1
    work()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        work()
        sync(device)
        times.append((clock() - start) / scale)
    return statistics.median(times)


def bench_training(model, config: HiFiGANConfig, training: dict, args, device) -> float:
    betas = tuple(training["adam_betas"])
    lr, decay = training["learning_rate"], training["weight_decay"]
    optimizers = {"discriminator": torch.optim.AdamW(model.discriminator_parameters(), lr, betas, weight_decay=decay),
                  "generator": torch.optim.AdamW(model.generator.parameters(), lr, betas, weight_decay=decay)}
    batch = training["batch_size"]
    audio = (torch.rand(batch, 1, config.segment_frames * config.hop_length, device=device) - 0.5) * 0.2
    mel = config.log_mel(audio[:, 0])
    model.train()

    def step():
        generated = model(mel)
        for name, loss in (("discriminator", lambda: model.discriminator_loss(audio, generated)),
                           ("generator", lambda: model.generator_loss(audio, mel, generated)[0])):
            for optimizer in optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss().backward()
            optimizers[name].step()

    return batch / timed(step, args.repeats, device, args.threads)


def bench_synthesis(model, config: HiFiGANConfig, args, device) -> dict:
    generator = model.generator.remove_weight_norm().eval()
    frames = int(args.seconds * config.sample_rate) // config.hop_length
    results = {}
    for batch_size in args.batch_sizes:
        mel = torch.randn(batch_size, config.n_mels, frames, device=device) - 5.0
        with torch.no_grad():
            seconds = timed(lambda: generator(mel), args.repeats, device, args.threads)
        audio_seconds = batch_size * frames * config.hop_length / config.sample_rate
        results[str(batch_size)] = {"real_time_factor": seconds / audio_seconds,
                                    "x_real_time": audio_seconds / seconds}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hifigan.json")
    parser.add_argument("--version", choices=["v1", "v3"], default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per synthesized mel")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    config_file = json.loads(args.config.read_text())
    section = {**config_file["model"], **({"version": args.version} if args.version else {})}
    config = HiFiGANConfig.from_dict(section, sample_rate=config_file["data"]["sample_rate"])
    training = {"adam_betas": [0.8, 0.99], "weight_decay": 0.0, "learning_rate": 2e-4, "batch_size": 16,
                **config_file.get("training", {})}
    model = HiFiGAN(config).to(device)
    result = {"config": str(args.config), "version": config.version, "device": str(device),
              "threads": args.threads, "torch": torch.__version__,
              "generator_parameters": sum(p.numel() for p in model.generator.parameters()),
              "discriminator_parameters": sum(p.numel() for p in model.discriminator_parameters()),
              "train_batch_size": training["batch_size"], "segment_frames": config.segment_frames,
              "train_segments_per_s": bench_training(model, config, training, args, device),
              "synthesis_seconds": args.seconds,
              "synthesis": bench_synthesis(model, config, args, device)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

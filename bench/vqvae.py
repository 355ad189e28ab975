"""Benchmark of the mel VQ-VAE: training throughput with and without the discriminator.

    python bench/vqvae.py --config configs/vqvae.json --threads 2

prints one JSON line. `train_frames_per_s`: spectrogram frames (crop columns)
per second through one training batch as the shared loop runs it: the
autoencoder's forward + backward + Adam step (with the GAN term and its
adaptive weight), then the discriminator's hinge step on the same batch.
`autoencoder_only_frames_per_s`: the same before `disc_start` (no GAN term,
no discriminator step), measured in the same run, alternating `--rounds`
times (best of each kept); `gan_cost_ratio` is their ratio. The model is built from the `model` section of `--config`
(`--set key=value` overrides a field, e.g. `--set channels=128` for the
seed's width); the input is random crops in [-1, 1] of the config's size.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samplernn_pase.models.vqvae import MelVQVAE, VQVAEConfig  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(model, mel, use_gan: bool, seconds: float, device) -> tuple[float, int]:
    betas = model.config.default_adam_betas     # training.adam_betas of a vqvae config left null
    autoencoder = torch.optim.Adam(model.autoencoder_parameters(), lr=1e-4, betas=betas)
    discriminator = torch.optim.Adam(model.discriminator_parameters(), lr=1e-4, betas=betas)
    model.train()

    def step():
        autoencoder.zero_grad(set_to_none=True)
        loss, _, reconstruction = model.autoencoder_loss(mel, use_gan=use_gan)
        loss.backward()
        autoencoder.step()
        if use_gan:
            discriminator.zero_grad(set_to_none=True)
            loss, _ = model.discriminator_loss(mel, reconstruction.detach())
            loss.backward()
            discriminator.step()

    step()  # warm-up
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    sync(device)
    return mel.shape[0] * mel.shape[2] * steps / (time.perf_counter() - start), steps


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "vqvae.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model field (JSON value)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's training.batch_size")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating measurements, best kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = json.loads(args.config.read_text())
    model_section = dict(config["model"])
    for item in args.set:
        key, _, value = item.partition("=")
        model_section[key] = parse_value(value)
    model_config = VQVAEConfig.from_dict(model_section)
    batch_size = args.batch_size or config.get("training", {}).get("batch_size", 8)
    model = MelVQVAE(model_config).to(device)
    mel = torch.rand(batch_size, model_config.n_mels, model_config.crop_frames, device=device) * 2 - 1
    # Alternating rounds, best of each: a busy machine slows both alike.
    gan, plain, gan_steps, plain_steps = 0.0, 0.0, 0, 0
    for _ in range(args.rounds):
        rate, steps = throughput(model, mel, True, args.seconds, device)
        gan, gan_steps = max(gan, rate), gan_steps + steps
        rate, steps = throughput(model, mel, False, args.seconds, device)
        plain, plain_steps = max(plain, rate), plain_steps + steps
    autoencoder_parameters = sum(p.numel() for p in model.autoencoder_parameters())
    print(json.dumps({
        "benchmark": "vqvae_training", "device": str(device), "threads": args.threads,
        "config": str(args.config), "overrides": args.set, "batch_size": batch_size,
        "n_mels": model_config.n_mels, "crop_frames": model_config.crop_frames,
        "channels": model_config.channels, "channel_multipliers": model_config.channel_multipliers,
        "codebook": [model_config.codebook_size, model_config.codebook_dim],
        "codes_per_crop": (model_config.n_mels // model_config.downsample_freq)
        * (model_config.crop_frames // model_config.downsample_time),
        "autoencoder_parameters": autoencoder_parameters,
        "discriminator_parameters": sum(p.numel() for p in model.discriminator_parameters()),
        "train_frames_per_s": round(gan, 1), "train_steps": gan_steps,
        "autoencoder_only_frames_per_s": round(plain, 1), "autoencoder_only_steps": plain_steps,
        "gan_cost_ratio": round(plain / gan, 3)}))


if __name__ == "__main__":
    main()

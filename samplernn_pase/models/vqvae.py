"""Mel VQ-VAE with a PatchGAN discriminator (the line of "Taming Transformers" / SpecVQGAN).

A log-mel crop (1 x n_mels x frames, scaled to [-1, 1]) goes through a 2-D
convolutional residual encoder (GroupNorm, swish) that downsamples frequency
and time by their own factors, single-head self-attention at the coarsest
level, a vector quantizer, and a mirror-image decoder. The autoencoder loss is
L1 reconstruction + codebook/commitment terms + (after `disc_start` batches) a
hinge-GAN generator term weighted adaptively; the discriminator is a PatchGAN
trained with the hinge loss by its own optimizer.

Codes are laid out (batch, frequency rows, time columns): `encode_codes` and
`decode_codes` are what a prior over the codes (GPT) uses.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch import distributed as torch_dist

from ..audio.mel import MelAnalysis
from .section import ModelSection


@dataclass
class VQVAEConfig(ModelSection, MelAnalysis):
    """The `model` section of a VQ-VAE config (schema/model_vqvae.json); the mel analysis
    fields come from MelAnalysis (data/mel_crops.py computes the spectrograms at init)."""

    #: The vocoder that renders the mels is the runner's (runners/vocoding.py).
    runner_settings = ("vocoder_experiment", "vocoder_epoch")

    crop_frames: int = 848
    # Encoder / decoder.
    channels: int = 128
    channel_multipliers: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    res_blocks: int = 2
    downsample_freq: int = 16
    downsample_time: int = 16
    attention: bool = True
    dropout: float = 0.0
    # Codebook.
    codebook_size: int = 128
    codebook_dim: int = 256
    codebook_update: str = "gradient"        # or "ema"
    ema_decay: float = 0.99
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    dead_code_steps: int = 0                 # 0: no restarts
    noise_sigma: float = 0.0
    # Discriminator.
    disc_start: int = 2001
    disc_weight: float = 0.8
    disc_layers: int = 3
    disc_channels: int = 64
    min_adapt_weight: float = 0.0
    max_adapt_weight: float = 1.0
    default_adam_betas = (0.5, 0.9)      # training.adam_betas when null: the seed's, for GAN training

    def axis_steps(self) -> tuple[int, int]:
        """log2 of the frequency and time downsampling factors."""
        return int(math.log2(self.downsample_freq)), int(math.log2(self.downsample_time))

    def problems(self) -> list[str]:
        """Rules between fields (one field's type and range: schema/model_vqvae.json)."""
        problems = self.analysis_problems()
        levels = len(self.channel_multipliers)
        for name in ("downsample_freq", "downsample_time"):
            factor = getattr(self, name)
            if factor < 1 or factor & (factor - 1):
                return problems + [f"model.{name}: {factor} is not a power of 2"]
        if max(self.axis_steps()) != levels - 1:
            problems.append(f"model.channel_multipliers: {levels} levels give {levels - 1} downsamplings, "
                            f"but downsample_freq {self.downsample_freq} / downsample_time "
                            f"{self.downsample_time} need {max(self.axis_steps())}")
        if self.n_mels % self.downsample_freq:
            problems.append(f"model.n_mels: {self.n_mels} is not a multiple of downsample_freq "
                            f"{self.downsample_freq}")
        if self.crop_frames % self.downsample_time:
            problems.append(f"model.crop_frames: {self.crop_frames} is not a multiple of downsample_time "
                            f"{self.downsample_time}")
        # The PatchGAN halves both axes disc_layers times, then two 4x4 convolutions take 3 more.
        if min(self.n_mels, self.crop_frames) < 3 * 2 ** self.disc_layers:
            problems.append(f"model.disc_layers: {self.disc_layers} layers need crops of at least "
                            f"{3 * 2 ** self.disc_layers} mels and frames (n_mels {self.n_mels}, "
                            f"crop_frames {self.crop_frames})")
        return problems


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or fewer when the width is not a multiple of 32."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_channels), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_channels), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over every position of the (coarsest) feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width).transpose(2, 3).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)           # (batch, positions, channels)
        return x + self.out(h.transpose(1, 2).reshape(batch, channels, height, width))


class Downsample(nn.Module):
    """3x3 convolution with stride 2 on the axes that shrink (padding on the far side only)."""

    def __init__(self, channels: int, stride: tuple[int, int]):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride)

    def forward(self, x):
        (sf, st) = self.stride
        return self.conv(F.pad(x, (int(st == 1), 1, int(sf == 1), 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int, scale: tuple[int, int]):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


def level_strides(config: VQVAEConfig) -> list[tuple[int, int]]:
    """(frequency, time) stride of each downsampling: each axis shrinks at the first steps."""
    steps_f, steps_t = config.axis_steps()
    return [(2 if i < steps_f else 1, 2 if i < steps_t else 1)
            for i in range(len(config.channel_multipliers) - 1)]


def middle(channels: int, config: VQVAEConfig) -> nn.Sequential:
    """Residual block, self-attention at the coarsest resolution, residual block."""
    return nn.Sequential(ResBlock(channels, channels, config.dropout),
                         SelfAttention(channels) if config.attention else nn.Identity(),
                         ResBlock(channels, channels, config.dropout))


class Encoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        widths = [config.channels * m for m in config.channel_multipliers]
        layers = [nn.Conv2d(1, config.channels, 3, padding=1)]
        width = config.channels
        strides = level_strides(config)
        for level, out_width in enumerate(widths):
            for _ in range(config.res_blocks):
                layers.append(ResBlock(width, out_width, config.dropout))
                width = out_width
            if level < len(strides):
                layers.append(Downsample(width, strides[level]))
        layers += [middle(width, config), group_norm(width), nn.SiLU(),
                   nn.Conv2d(width, config.codebook_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, mel):
        return self.layers(mel)


class Decoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        widths = [config.channels * m for m in config.channel_multipliers]
        strides = level_strides(config)
        width = widths[-1]
        layers = [nn.Conv2d(config.codebook_dim, width, 3, padding=1), middle(width, config)]
        for level in reversed(range(len(widths))):
            for _ in range(config.res_blocks + 1):
                layers.append(ResBlock(width, widths[level], config.dropout))
                width = widths[level]
            if level > 0:
                layers.append(Upsample(width, strides[level - 1]))
        layers += [group_norm(width), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(width, 1, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight compares gradient norms at."""
        return self.conv_out.weight

    def forward(self, quantized):
        return self.conv_out(self.layers(quantized))


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over DDP ranks (identity in a single process), so every rank's codebook agrees."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.all_reduce(tensor)
    return tensor


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantization with a straight-through gradient.

    loss = codebook_term + commitment_weight * ||z - sg(e)||^2, where the codebook
    term ||sg(z) - e||^2 is dropped when the codebook follows exponential moving
    averages of its assigned encoder outputs instead of gradients. Codes no
    input of the last `dead_code_steps` training batches chose are re-seeded
    from encoder outputs of the current batch (not from quantized outputs,
    which are codebook entries already and would revive nothing).
    """

    def __init__(self, size: int, dim: int, commitment_weight: float, update: str = "gradient",
                 ema_decay: float = 0.99, dead_code_steps: int = 0, noise_sigma: float = 0.0):
        super().__init__()
        self.size, self.dim = size, dim
        self.commitment_weight, self.update = commitment_weight, update
        self.ema_decay, self.dead_code_steps, self.noise_sigma = ema_decay, dead_code_steps, noise_sigma
        self.codebook = nn.Parameter(torch.empty(size, dim).uniform_(-1 / size, 1 / size),
                                     requires_grad=update == "gradient")
        self.register_buffer("ema_count", torch.ones(size))
        self.register_buffer("ema_sum", self.codebook.detach().clone())
        self.register_buffer("unused_steps", torch.zeros(size, dtype=torch.long))
        self.restarted = 0      # codes re-seeded by the last training batch (logged)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry of every row of `flat` (N, dim)."""
        with torch.no_grad():
            codebook = self.codebook.float()
            distances = (flat.float().pow(2).sum(1, keepdim=True) - 2 * flat.float() @ codebook.T
                         + codebook.pow(2).sum(1))
            return distances.argmin(1)

    def forward(self, z: torch.Tensor):
        """z (batch, dim, H, W) -> (quantized z with straight-through gradient, loss, codes (batch, H, W))."""
        batch, dim, height, width = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, dim)
        codes = self.nearest(flat)
        quantized = self.codebook[codes].to(flat.dtype)
        loss = self.commitment_weight * F.mse_loss(flat, quantized.detach())
        if self.update == "gradient":
            loss = loss + F.mse_loss(quantized, flat.detach())
        out = flat + (quantized - flat).detach()           # straight-through estimator
        if self.training:
            if self.noise_sigma > 0:
                out = out + self.noise_sigma * torch.randn_like(out)
            with torch.no_grad():
                counts = _all_reduce(torch.bincount(codes, minlength=self.size).float())
                if self.update == "ema":
                    self.ema_update(flat.detach().float(), codes, counts)
                if self.dead_code_steps > 0:
                    self.restarted = self.restart_dead_codes(flat.detach().float(), counts)
        out = out.reshape(batch, height, width, dim).permute(0, 3, 1, 2)
        return out, loss, codes.reshape(batch, height, width)

    def ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        sums = _all_reduce(torch.zeros_like(self.ema_sum).index_add_(0, codes, flat))
        self.ema_count.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        self.ema_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (total + self.size * 1e-5) * total   # Laplace smoothing
        self.codebook.data.copy_(self.ema_sum / smoothed[:, None])

    def restart_dead_codes(self, flat: torch.Tensor, counts: torch.Tensor) -> int:
        """Re-seed codes unused for `dead_code_steps` batches with random encoder outputs of
        this batch (identical on every DDP rank: rank 0's choice is broadcast)."""
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= self.dead_code_steps).nonzero().squeeze(1)
        if len(dead) == 0:
            return 0
        rows = torch.randint(len(flat), (len(dead),), device=flat.device)
        fresh = flat[rows]
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.broadcast(fresh, 0)
        self.codebook.data[dead] = fresh.to(self.codebook.dtype)
        self.ema_sum[dead] = fresh
        self.ema_count[dead] = 1.0
        self.unused_steps[dead] = 0
        return len(dead)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): strided 4x4 convolutions, one real/fake logit per patch."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        sequence = [nn.Conv2d(1, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, layers + 1):
            out_width = channels * min(2 ** n, 8)
            stride = 2 if n < layers else 1
            sequence += [nn.Conv2d(width, out_width, 4, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_width), nn.LeakyReLU(0.2)]
            width = out_width
        sequence.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*sequence)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, mel):
        return self.layers(mel)


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor,
                        last_layer: torch.Tensor, minimum: float, maximum: float) -> torch.Tensor:
    """||d rec / d last_layer|| / (||d gan / d last_layer|| + 1e-4), clamped and detached: the
    GAN term pulls on the decoder's last layer as hard as the reconstruction term does."""
    reconstruction_grad, = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)
    generator_grad, = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)
    weight = reconstruction_grad.norm() / (generator_grad.norm() + 1e-4)
    return weight.clamp(minimum, maximum).detach()


class MelVQVAE(nn.Module):
    """Autoencoder (encoder, quantizer, decoder) and its discriminator in one module, so that
    one DistributedDataParallel wrapper serves both optimizers; the runner calls the two
    named losses (`autoencoder_loss`, `discriminator_loss`)."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizer(config.codebook_size, config.codebook_dim, config.commitment_weight,
                                         config.codebook_update, config.ema_decay, config.dead_code_steps,
                                         config.noise_sigma)
        self.decoder = Decoder(config)
        self.discriminator = PatchDiscriminator(config.disc_channels, config.disc_layers)

    def autoencoder_parameters(self):
        return [p for name, p in self.named_parameters()
                if not name.startswith("discriminator.") and p.requires_grad]

    def discriminator_parameters(self):
        return list(self.discriminator.parameters())

    def autoencode(self, mel: torch.Tensor):
        """mel (batch, n_mels, frames) -> (reconstruction, quantizer loss, codes (batch, H, W))."""
        quantized, quantizer_loss, codes = self.quantizer(self.encoder(mel[:, None]))
        return self.decoder(quantized)[:, 0], quantizer_loss, codes

    @torch.no_grad()
    def encode_codes(self, mel: torch.Tensor) -> torch.Tensor:
        """Codes (batch, n_mels / downsample_freq, frames / downsample_time) of scaled mels."""
        return self.quantizer.nearest(self.encoder(mel[:, None]).permute(0, 2, 3, 1).flatten(0, 2)
                                      ).reshape(mel.shape[0], self.config.n_mels // self.config.downsample_freq, -1)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Scaled mels (batch, n_mels, frames) of codes (batch, H, W)."""
        quantized = self.quantizer.codebook[codes].permute(0, 3, 1, 2)
        return self.decoder(quantized)[:, 0]

    def autoencoder_loss(self, mel: torch.Tensor, use_gan: bool = False):
        """L1 + codebook_weight * quantizer loss (+ adaptive weight * disc_weight * hinge
        generator loss when `use_gan`) -> (loss, scalars as detached tensors, reconstruction)."""
        c = self.config
        reconstruction, quantizer_loss, codes = self.autoencode(mel)
        reconstruction_loss = (reconstruction - mel).abs().mean()
        loss = reconstruction_loss + c.codebook_weight * quantizer_loss
        used = torch.zeros(self.quantizer.size, device=codes.device).index_fill_(0, codes.flatten(), 1)
        scalars = {"reconstruction_l1": reconstruction_loss.detach(), "quantizer_loss": quantizer_loss.detach(),
                   "codes_used": used.sum(), "codes_restarted": self.quantizer.restarted}
        if use_gan:
            generator_loss = -self.discriminator(reconstruction[:, None]).mean()
            weight = adaptive_gan_weight(reconstruction_loss, generator_loss, self.decoder.last_layer,
                                         c.min_adapt_weight, c.max_adapt_weight) * c.disc_weight
            loss = loss + weight * generator_loss
            scalars.update({"generator_loss": generator_loss.detach(), "adaptive_weight": weight})
        return loss, scalars, reconstruction

    def discriminator_loss(self, mel: torch.Tensor, reconstruction: torch.Tensor):
        """The hinge loss on `mel` (real) against `reconstruction` (detached) -> (loss, scalars)."""
        logits_real = self.discriminator(mel[:, None])
        logits_fake = self.discriminator(reconstruction.detach()[:, None])
        loss = hinge_discriminator_loss(logits_real, logits_fake)
        return loss, {"logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}

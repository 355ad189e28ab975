"""Conditional WGAN-GP: mel spectrograms from noise and discrete labels.

DCGAN-shaped generator and critic (Radford et al. 2015) trained as a
Wasserstein GAN with gradient penalty (Gulrajani et al. 2017), conditioned on
discrete labels (here the speaker and its gender). One file, one dataclass
config, plain modules.

Layout: a mel crop is (B, 1, n_mels, frames) of the experiment's normalized
log-mel (standardized, so an unbounded linear output can reach its range).
Labels are (B, L) integer indices, one column per label kind.

Generator: noise -> linear -> a small (n_mels / 2^S, frames / 2^S) map, one
embedding per label broadcast over that map as extra channels, S transposed
convolutions doubling both axes, a last convolution to one channel. The
"strip" variant (the seed's shallow CWGAN-GP) is k narrow generators, each
making frames / k consecutive frames; they run as ONE network whose layers
are grouped convolutions (group j is generator j), so a single pass makes all
strips: the seed ran them in processes and threads and got no speed-up.
The deep generator is the same module with one group.

Critic: strided convolutions with LeakyReLU and no normalization (batch
norm would make a sample's score, and so its gradient, depend on the rest of
the batch, which breaks the per-sample gradient penalty), then a linear
feature layer and a score. Labels enter as constant maps concatenated to the
input ("concat"), or as a projection term <embed(y), features> added to the
score (Miyato & Koyama 2018, "projection").
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.mel import MelAnalysis
from .section import ModelSection


@dataclass
class CWGANGPConfig(ModelSection, MelAnalysis):
    """The `model` section of a CWGAN-GP config (schema/model_cwgan_gp.json); the mel analysis
    fields (n_fft, hop_length, ...) come from MelAnalysis (data/mel_crops.py computes the mels)."""

    n_mels: int = 64
    frames: int = 64                    # frames of a generated crop
    label_sizes: tuple = (1,)           # classes of each label kind (speaker, gender, ...)
    noise_size: int = 128
    label_embedding_size: int = 16
    scales: int = 3                     # stride-2 layers of the generator and of the critic
    generator: str = "deep"             # "deep" or "strips"
    generator_channels: int = 32        # deep: channels of the last layer, doubling towards the input
    strips: int = 8                     # "strips": number of strip generators
    strip_channels: int = 8             # "strips": channels of each strip's last layer
    critic_conditioning: str = "concat"  # "concat" or "projection"
    critic_channels: int = 32           # first critic layer, doubling per layer
    critic_features: int = 128
    gradient_penalty_weight: float = 10.0
    n_critic: int = 5
    # The labels and the test's samples are the runner's.
    runner_settings = ("labels", "samples_per_label")
    default_adam_betas = (0.5, 0.9)      # training.adam_betas when null: the seed's, for GAN training

    @property
    def groups(self) -> int:
        return self.strips if self.generator == "strips" else 1

    def problems(self) -> list[str]:
        """Rules between fields (one field's type and range: schema/model_cwgan_gp.json)."""
        problems = self.analysis_problems()
        step = 2 ** self.scales
        if self.n_mels % step:
            problems.append(f"model.n_mels: {self.n_mels} is not a multiple of 2 ** scales = {step}")
        if self.frames % (step * self.groups):
            problems.append(f"model.frames: {self.frames} is not a multiple of 2 ** scales * strips = "
                            f"{step * self.groups}" if self.groups > 1 else
                            f"model.frames: {self.frames} is not a multiple of 2 ** scales = {step}")
        return problems


class MelGenerator(nn.Module):
    """`groups` generators of frames / groups frames each, as one grouped network.

    groups=1 is the deep generator. Group j owns its rows of the input linear
    layer, its own label embeddings and the j-th group of every convolution,
    so strip j depends on generator j's weights only (a test checks it).
    """

    def __init__(self, config: CWGANGPConfig, groups: int, channels: int):
        super().__init__()
        self.groups = groups
        self.n_mels, self.strip_frames = config.n_mels, config.frames // groups
        scales = config.scales
        self.start = (config.n_mels >> scales, self.strip_frames >> scales)
        widths = [channels * 2 ** (scales - i) for i in range(scales + 1)]
        self.start_channels = widths[0]
        self.project = nn.Linear(config.noise_size, groups * widths[0] * self.start[0] * self.start[1])
        self.start_norm = nn.BatchNorm2d(groups * widths[0])
        self.label_embeddings = nn.ModuleList(
            nn.Embedding(size, groups * config.label_embedding_size) for size in config.label_sizes)
        layers = []
        width_in = widths[0] + config.label_embedding_size * len(config.label_sizes)
        for width_out in widths[1:]:
            layers += [nn.ConvTranspose2d(groups * width_in, groups * width_out, 4, stride=2, padding=1,
                                          groups=groups),
                       nn.BatchNorm2d(groups * width_out), nn.ReLU()]
            width_in = width_out
        layers.append(nn.Conv2d(groups * width_in, groups, 3, padding=1, groups=groups))
        self.layers = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, noise_size), (B, L) -> (B, 1, n_mels, frames)."""
        batch, groups = noise.shape[0], self.groups
        height, width = self.start
        x = F.relu(self.start_norm(self.project(noise).view(batch, -1, height, width)))
        x = x.view(batch, groups, self.start_channels, height, width)
        label_maps = torch.cat([embedding(labels[:, i]).view(batch, groups, -1, 1, 1)
                                for i, embedding in enumerate(self.label_embeddings)], dim=2)
        x = torch.cat([x, label_maps.expand(-1, -1, -1, height, width)], dim=2)
        strips = self.layers(x.flatten(1, 2))              # (B, groups, n_mels, strip_frames)
        return strips.permute(0, 2, 1, 3).reshape(batch, 1, self.n_mels, groups * self.strip_frames)


class MelCritic(nn.Module):
    """Score of a (mel, labels) pair; higher means more like the real data."""

    def __init__(self, config: CWGANGPConfig):
        super().__init__()
        self.concat = config.critic_conditioning == "concat"
        size = config.label_embedding_size if self.concat else config.critic_features
        self.label_embeddings = nn.ModuleList(nn.Embedding(n, size) for n in config.label_sizes)
        layers, width_in = [], 1 + (size * len(config.label_sizes) if self.concat else 0)
        for i in range(config.scales):
            width_out = config.critic_channels * 2 ** i
            layers += [nn.Conv2d(width_in, width_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width_in = width_out
        self.convolutions = nn.Sequential(*layers, nn.Flatten())
        flat = width_in * (config.n_mels >> config.scales) * (config.frames >> config.scales)
        self.features = nn.Sequential(nn.Linear(flat, config.critic_features), nn.LeakyReLU(0.2))
        self.score = nn.Linear(config.critic_features, 1)

    def forward(self, mel: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames), (B, L) -> (B,) scores."""
        embedded = [embedding(labels[:, i]) for i, embedding in enumerate(self.label_embeddings)]
        if self.concat:
            maps = torch.cat(embedded, dim=1)[:, :, None, None].expand(-1, -1, *mel.shape[2:])
            mel = torch.cat([mel, maps.to(mel.dtype)], dim=1)
        features = self.features(self.convolutions(mel))
        score = self.score(features).squeeze(1)
        if not self.concat:
            score = score + sum((e * features).sum(1) for e in embedded)
        return score


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                     epsilon: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i (||d critic(x_i) / d x_i|| - 1)^2 at x_i = eps_i real_i + (1 - eps_i) fake_i.

    One epsilon and one gradient norm per sample (Gulrajani et al., Algorithm 1):
    the penalty keeps every sample's gradient near norm 1, not the batch's.
    Summing the scores before differentiating gives each sample its own
    gradient because the critic treats samples independently.
    """
    if epsilon is None:
        epsilon = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device,
                             dtype=real.dtype)
    mixed = (epsilon * real + (1 - epsilon) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
    norms = gradient.flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()


class CWGANGP(nn.Module):
    """Generator + critic and the loss of each one's step (`critic_loss`, `generator_loss`),
    which the runner calls in turn (through the DistributedDataParallel wrapper under torchrun:
    training/distributed.py DistributedModel)."""

    def __init__(self, config: CWGANGPConfig):
        super().__init__()
        self.config = config
        channels = config.strip_channels if config.generator == "strips" else config.generator_channels
        self.generator = MelGenerator(config, config.groups, channels)
        self.critic = MelCritic(config)

    def critic_loss(self, real, labels, noise) -> tuple[torch.Tensor, dict]:
        """-(E critic(real) - E critic(fake)) + lambda * penalty, and its two terms (detached).
        The fakes are made without a graph: the critic step must not reach the generator."""
        with torch.no_grad():
            fake = self.generator(noise, labels)
        wasserstein = self.critic(real, labels).mean() - self.critic(fake, labels).mean()
        penalty = gradient_penalty(self.critic, real, fake, labels)
        loss = -wasserstein + self.config.gradient_penalty_weight * penalty
        return loss, {"wasserstein": wasserstein.detach(), "gradient_penalty": penalty.detach()}

    def generator_loss(self, labels, noise) -> torch.Tensor:
        """-E critic(G(noise, labels))."""
        return -self.critic(self.generator(noise, labels), labels).mean()

    @torch.no_grad()
    def wasserstein_estimate(self, real, labels, noise) -> torch.Tensor:
        """E critic(real) - E critic(G(noise, labels)), per batch (no penalty)."""
        fake = self.generator(noise, labels)
        return self.critic(real, labels).mean() - self.critic(fake, labels).mean()

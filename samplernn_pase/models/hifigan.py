"""HiFi-GAN (Kong et al. 2020): a mel-spectrogram vocoder trained adversarially.

One file, one dataclass config, plain modules, as jik876/hifi-gan's models.py.

Generator: a 7-wide convolution from the mel (B x n_mels x T) to
`upsample_initial_channel` channels, then one stage per upsampling rate:
LeakyReLU, a transposed convolution by the rate (channels halved), and a
multi-receptive-field fusion (MRF): the mean of one residual block per kernel
size, each block a stack of dilated convolutions. A last 7-wide convolution
to one channel and tanh give the waveform (B x 1 x T * prod(rates)). The
rates' product is the mel's hop (160 = 5 * 4 * 4 * 2 for 10 ms frames at
16 kHz). Every convolution carries weight norm while training;
`remove_weight_norm` folds it into plain weights for inference.

V1 and V3 are the paper's widths: V1 512 initial channels, blocks of type 1
(kernels 3, 7, 11, dilations 1, 3, 5 twice over); V3 256 channels and blocks of
type 2 (kernels 3, 5, 7, dilations (1, 2), (2, 6), (3, 12), one convolution
per dilation).

Discriminators (`Tensor[B x 1 x samples]` in, a list of (score, feature maps)
out, one per sub-discriminator):
- MPD: for each period p (2, 3, 5, 7, 11) the waveform is reflect-padded to a
  multiple of p and folded to (B, 1, samples / p, p), then 2-D convolutions
  with (k, 1) kernels see every p-th sample;
- MSD: three 1-D convolution stacks on the raw audio and on its 2x and 4x
  average-pooled versions (the first with spectral norm, the others weight norm).

Losses, each written once: least squares (LSGAN) for both players, feature
matching (L1 between the discriminators' feature maps of real and generated
audio, weight 2) and mel L1 (weight 45) in the generator's loss.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from ..audio.mel import MelAnalysis, mel_spectrogram
from .section import ModelSection

LRELU_SLOPE = 0.1

#: The paper's generator widths (section 4.1 and appendix A of Kong et al.).
VERSIONS = {
    "v1": {"upsample_initial_channel": 512, "resblock": 1, "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]},
    "v3": {"upsample_initial_channel": 256, "resblock": 2, "resblock_kernel_sizes": [3, 5, 7],
           "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]]},
}


@dataclass
class HiFiGANConfig(ModelSection, MelAnalysis):
    """The `model` section of a HiFi-GAN config (schema/model_hifigan.json); the mel analysis
    fields come from MelAnalysis, at the corpus's sample rate (`sample_rate` is the data's)."""

    n_mels: int = 64
    hop_length: int = 160
    win_length: int = 640
    fmax: float | None = 8000.0
    sample_rate: int = 16000
    version: str = "v3"
    upsample_rates: list = field(default_factory=lambda: [5, 4, 4, 2])
    upsample_kernel_sizes: list = field(default_factory=lambda: [11, 8, 8, 4])
    mpd_periods: list = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: list = field(default_factory=lambda: [32, 128, 512, 1024, 1024])
    msd_scales: int = 3
    msd_channels: list = field(default_factory=lambda: [128, 128, 256, 512, 1024, 1024, 1024])
    segment_frames: int = 32            # mel frames of a training segment
    feature_matching_weight: float = 2.0
    mel_weight: float = 45.0
    default_adam_betas = (0.8, 0.99)    # training.adam_betas when null: the paper's

    @property
    def widths(self) -> dict:
        return VERSIONS[self.version]

    def problems(self) -> list[str]:
        problems = self.analysis_problems()
        product = 1
        for rate in self.upsample_rates:
            product *= rate
        if product != self.hop_length:
            problems.append(f"model.upsample_rates: their product ({product}) must equal "
                            f"model.hop_length ({self.hop_length}), the samples per mel frame")
        if len(self.upsample_kernel_sizes) != len(self.upsample_rates):
            problems.append("model.upsample_kernel_sizes: one per upsampling rate")
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if kernel < rate or (kernel - rate) % 2:
                problems.append(f"model.upsample_kernel_sizes: {kernel} for rate {rate}; each must be at "
                                "least its rate, and differ from it by an even number (the output is "
                                "then exactly rate times longer)")
                break
        if self.upsample_initial_channel >> len(self.upsample_rates) < 1:
            problems.append("model.upsample_rates: more stages than the channels can be halved")
        return problems

    @property
    def upsample_initial_channel(self) -> int:
        return self.widths["upsample_initial_channel"]

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """The analysis the vocoder inverts (audio/mel.py): (..., samples) -> (..., n_mels, frames)."""
        return mel_spectrogram(audio, self.sample_rate, self.n_fft, self.hop_length, self.win_length,
                               self.n_mels, self.fmin, self.fmax)


def padding_for(kernel_size: int, dilation: int = 1) -> int:
    """'same' padding of an odd kernel."""
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Type 1: per dilation, a dilated convolution then an undilated one, each after a LeakyReLU,
    with a residual connection around the pair."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                                          padding=padding_for(kernel_size, d)))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel_size,
                                                          padding=padding_for(kernel_size)))
                                    for _ in dilations)

    def forward(self, x):
        for conv1, conv2 in zip(self.convs1, self.convs2):
            x = x + conv2(F.leaky_relu(conv1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """Type 2 (V3): one dilated convolution per dilation, each with its residual connection."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                                         padding=padding_for(kernel_size, d)))
                                   for d in dilations)

    def forward(self, x):
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """Log-mel (B x n_mels x T) -> waveform (B x 1 x T * hop_length) in [-1, 1]."""

    def __init__(self, config: HiFiGANConfig):
        super().__init__()
        widths = config.widths
        channels = widths["upsample_initial_channel"]
        block = ResBlock1 if widths["resblock"] == 1 else ResBlock2
        self.conv_pre = weight_norm(nn.Conv1d(config.n_mels, channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
            self.ups.append(weight_norm(nn.ConvTranspose1d(channels, channels // 2, kernel, rate,
                                                           padding=(kernel - rate) // 2)))
            channels //= 2
            self.resblocks.extend(block(channels, k, d) for k, d in
                                  zip(widths["resblock_kernel_sizes"], widths["resblock_dilation_sizes"]))
        self.num_kernels = len(widths["resblock_kernel_sizes"])
        self.conv_post = weight_norm(nn.Conv1d(channels, 1, 7, padding=3))
        for module in self.modules():     # the paper's initialization: N(0, 0.01) weights
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and module is not self.conv_pre:
                module.parametrizations.weight.original1.data.normal_(0.0, 0.01)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels     # MRF
        return torch.tanh(self.conv_post(F.leaky_relu(x)))

    def remove_weight_norm(self) -> "Generator":
        """Fold every weight norm into a plain weight (inference: the same output, less work)."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight")
        return self


def convolve_with_features(convs, conv_post, x):
    """A discriminator's stack: leaky-ReLU convolutions, then the output convolution. Returns
    the flattened scores (B, -1) and every layer's output (for feature matching)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return torch.flatten(x, 1, -1), features


class PeriodDiscriminator(nn.Module):
    """Sees every `period`-th sample: (B, 1, samples) folded to (B, 1, samples / period, period)."""

    def __init__(self, period: int, channels: list[int]):
        super().__init__()
        self.period = period
        widths = [1] + list(channels)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(widths[i], widths[i + 1], (5, 1), (3 if i < len(channels) - 1 else 1, 1),
                                  padding=(2, 0)))
            for i in range(len(channels)))
        self.conv_post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), 1, padding=(1, 0)))

    def fold(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 1, samples) -> (B, 1, ceil(samples / period), period), reflect-padded at the end."""
        batch, channels, samples = audio.shape
        pad = (-samples) % self.period
        if pad:
            audio = F.pad(audio, (0, pad), mode="reflect")
        return audio.view(batch, channels, (samples + pad) // self.period, self.period)

    def forward(self, audio):
        return convolve_with_features(self.convs, self.conv_post, self.fold(audio))


class ScaleDiscriminator(nn.Module):
    """1-D grouped strided convolutions over the waveform at one scale."""

    KERNELS = (15, 41, 41, 41, 41, 41, 5)
    STRIDES = (1, 2, 2, 4, 4, 1, 1)
    GROUPS = (1, 4, 16, 16, 16, 16, 1)

    def __init__(self, channels: list[int], spectral: bool = False):
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        widths = [1] + list(channels)
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(widths[i], widths[i + 1], self.KERNELS[i], self.STRIDES[i],
                           groups=math.gcd(self.GROUPS[i], widths[i], widths[i + 1]),
                           padding=self.KERNELS[i] // 2))
            for i in range(len(channels)))
        self.conv_post = norm(nn.Conv1d(widths[-1], 1, 3, 1, padding=1))

    def forward(self, audio):
        return convolve_with_features(self.convs, self.conv_post, audio)


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: list[int], channels: list[int]):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, audio):
        return [d(audio) for d in self.discriminators]


class MultiScaleDiscriminator(nn.Module):
    """The raw audio, then its 2x, 4x, ... average-pooled versions (kernel 4, stride 2)."""

    def __init__(self, scales: int, channels: list[int]):
        super().__init__()
        self.discriminators = nn.ModuleList(ScaleDiscriminator(channels, spectral=i == 0)
                                            for i in range(scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, audio):
        results = []
        for i, discriminator in enumerate(self.discriminators):
            if i > 0:
                audio = self.pool(audio)
            results.append(discriminator(audio))
        return results


# --- the losses, each written once ---------------------------------------------------------

def discriminator_adversarial_loss(real: list, fake: list) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of E[(1 - D(y))^2] + E[D(G(s))^2] (scores only)."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f ** 2) for r, f in zip(real, fake))


def generator_adversarial_loss(fake: list) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of E[(1 - D(G(s)))^2]."""
    return sum(torch.mean((1 - f) ** 2) for f in fake)


def feature_matching_loss(real_features: list, fake_features: list) -> torch.Tensor:
    """Sum over sub-discriminators and their layers of E|D_i(y) - D_i(G(s))| (unweighted)."""
    return sum(torch.mean(torch.abs(r - f)) for real, fake in zip(real_features, fake_features)
               for r, f in zip(real, fake))


class HiFiGAN(nn.Module):
    """Generator + the two discriminators, and the loss of each player's step, which the runner
    calls in turn (discriminator step, then generator step, hifi-gan's train.py order)."""

    def __init__(self, config: HiFiGANConfig):
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.mpd = MultiPeriodDiscriminator(config.mpd_periods, config.mpd_channels)
        self.msd = MultiScaleDiscriminator(config.msd_scales, config.msd_channels)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """The generator: (B, n_mels, frames) -> (B, 1, frames * hop_length)."""
        return self.generator(mel)

    def discriminator_parameters(self):
        return list(self.mpd.parameters()) + list(self.msd.parameters())

    def discriminate(self, audio: torch.Tensor) -> tuple[list, list]:
        """(scores, feature maps) of every sub-discriminator, MPD's first."""
        results = self.mpd(audio) + self.msd(audio)
        return [score for score, _ in results], [features for _, features in results]

    def discriminator_loss(self, audio: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """LSGAN loss of both discriminators on real audio and the (detached) generated audio."""
        real, _ = self.discriminate(audio)
        fake, _ = self.discriminate(generated.detach())
        return discriminator_adversarial_loss(real, fake)

    def generator_loss(self, audio: torch.Tensor, mel: torch.Tensor, generated: torch.Tensor
                       ) -> tuple[torch.Tensor, dict]:
        """adversarial + feature_matching_weight * feature matching + mel_weight * mel L1, with
        the three terms (detached, unweighted) to log."""
        c = self.config
        mel_l1 = F.l1_loss(c.log_mel(generated.squeeze(1)), mel)
        with torch.no_grad():     # the real audio's features: targets, no gradient to anything
            _, real_features = self.discriminate(audio)
        fake, fake_features = self.discriminate(generated)
        adversarial = generator_adversarial_loss(fake)
        matching = feature_matching_loss(real_features, fake_features)
        loss = adversarial + c.feature_matching_weight * matching + c.mel_weight * mel_l1
        return loss, {"adversarial": adversarial.detach(), "feature_matching": matching.detach(),
                      "mel_l1": mel_l1.detach()}


class MelVocoder:
    """A trained generator, weight norm folded in, that renders natural-log mels in the analysis
    of its `config` (what a mel family that names it in `model.vocoder_experiment` calls)."""

    def __init__(self, generator: Generator, config: HiFiGANConfig, name: str, epoch: int, device="cpu"):
        self.generator = generator.remove_weight_norm().eval().to(device)
        self.config, self.name, self.epoch, self.device = config, name, epoch, device

    @torch.no_grad()
    def __call__(self, log_mel) -> np.ndarray:
        """Waveform (..., frames * hop_length) of a natural-log mel (..., n_mels, frames)."""
        log_mel = torch.as_tensor(log_mel, dtype=torch.float32)
        shape = log_mel.shape
        audio = self.generator(log_mel.reshape(-1, *shape[-2:]).to(self.device))[:, 0]
        return audio.reshape(*shape[:-2], audio.shape[-1]).float().cpu().numpy()

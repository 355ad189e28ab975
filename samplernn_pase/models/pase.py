"""PASE: a problem-agnostic speech encoder and the speaker seeds made from it.

A SincNet front end (band-pass filters with learnable cut-offs) and a stack of
strided convolutions turn a 16 kHz waveform into D-dimensional frames every
10 ms. Nothing labels the audio: small workers on top of the frames regress
what a speech signal is made of (the waveform itself, the log-power spectrum,
MFCCs, prosody) and two discriminators tell frames of the same chunk from
frames of another (local and global information maximisation). Their losses,
weighted, are the training loss. A speaker's embedding is the mean of the
frames over a few seconds of that speaker's voice: the seed that conditions
SampleRNN, so that an unseen speaker can be voiced without retraining.

    model = PASE(PASEConfig())
    losses = model(wave)              # wave (B, N): {"waveform", ..., "total"}
    frames = model.encode(wave)       # (B, N // model.hop, embedding_dim)
    seed = speaker_seed(model, waves, seed_seconds=3.0, sample_rate=16000)

Frame t of the encoder sees the samples
[t * hop - left_context, t * hop - left_context + receptive_field).
"""

import math
from dataclasses import asdict, dataclass, field

import librosa
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from samplernn_pase.models.pase_targets import compute_targets
from samplernn_pase.models.section import ModelSection

WORKERS = ("waveform", "lps", "mfcc", "prosody", "lim", "gim")
REGRESSION_TARGETS = ("lps", "mfcc", "prosody")  # computed by pase_targets


@dataclass
class PASEConfig(ModelSection):
    sample_rate: int = 16000
    chunk_seconds: float = 1.0  # training chunk length, cut at random from an utterance
    seed_seconds: float = 3.0  # seconds of a speaker's audio averaged into its embedding
    embedding_dim: int = 100
    sinc_channels: int = 64
    sinc_kernel: int = 251  # odd
    sinc_min_low_hz: float = 50.0
    sinc_min_band_hz: float = 50.0
    conv_channels: tuple = (64, 128, 128, 256, 256, 512, 512)
    conv_kernels: tuple = (20, 11, 11, 11, 11, 11, 11)
    conv_strides: tuple = (10, 2, 1, 2, 1, 2, 2)  # product = hop = 10 ms of samples
    worker_hidden: int = 256
    worker_weights: dict = field(default_factory=lambda: {name: 1.0 for name in WORKERS})
    # worker targets (pase_targets.compute_targets)
    n_fft: int = 512
    win_length: int = 400
    n_mels: int = 40
    n_mfcc: int = 20
    # The prosody target's F0 is the corpus's (data.f0_method, f0_floor, f0_ceil), given with the chunks.

    def __post_init__(self):
        self.conv_channels = tuple(self.conv_channels)
        self.conv_kernels = tuple(self.conv_kernels)
        self.conv_strides = tuple(self.conv_strides)
        self.worker_weights = {**{name: 1.0 for name in WORKERS}, **self.worker_weights}  # unnamed: 1.0
        super().__post_init__()

    def problems(self) -> list[str]:
        """Rules between fields (one field's type and range: schema/model_pase.json)."""
        problems = []
        hop = math.prod(self.conv_strides)
        if hop * 100 != self.sample_rate:
            problems.append(f"model.conv_strides: multiply to {hop} samples; 10 ms at model.sample_rate "
                            f"{self.sample_rate} Hz is {self.sample_rate / 100:g}")
        if not len(self.conv_channels) == len(self.conv_kernels) == len(self.conv_strides):
            problems.append("model.conv_channels: conv_channels, conv_kernels and conv_strides need one "
                            f"entry per layer, got {len(self.conv_channels)}, {len(self.conv_kernels)} "
                            f"and {len(self.conv_strides)}")
        if any(k < s for k, s in zip(self.conv_kernels, self.conv_strides)):
            problems.append("model.conv_kernels: every conv kernel must be at least as long as its stride "
                            "(model.conv_strides)")
        if not any(w > 0 for w in self.worker_weights.values()):
            problems.append("model.worker_weights: at least one worker needs a weight above 0")
        if self.win_length > self.n_fft:
            problems.append(f"model.win_length: {self.win_length} is longer than model.n_fft {self.n_fft}")
        return problems

    def to_dict(self):
        """JSON-ready `model` section."""
        out = {"type": "pase", **asdict(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def worker_targets(cfg: PASEConfig, wave, f0=None) -> dict:
    """The regression workers' targets of chunks (B, N) on the encoder's frame grid (10 ms).

    f0: (B, >= N // hop) WORLD F0 of the chunks (audio/world.py), needed by the prosody worker.
    """
    wanted = tuple(name for name in REGRESSION_TARGETS if cfg.worker_weights.get(name, 0) > 0)
    if not wanted:
        return {}
    hop = math.prod(cfg.conv_strides)
    return compute_targets(
        wave, cfg.sample_rate, wave.shape[-1] // hop, hop_length=hop, n_fft=cfg.n_fft,
        win_length=cfg.win_length, n_mels=cfg.n_mels, n_mfcc=cfg.n_mfcc, workers=wanted, f0=f0,
    )


class SincConv(nn.Module):
    """Band-pass filters parameterised only by their two cut-off frequencies (SincNet)."""

    def __init__(self, channels, kernel_size, sample_rate, min_low_hz, min_band_hz):
        super().__init__()
        self.kernel_size, self.sample_rate = kernel_size, sample_rate
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        # cut-offs spaced evenly on the mel scale between 30 Hz and Nyquist
        top = sample_rate / 2 - (min_low_hz + min_band_hz)
        mel = np.linspace(2595 * np.log10(1 + 30 / 700), 2595 * np.log10(1 + top / 700), channels + 1)
        hz = 700 * (10 ** (mel / 2595) - 1)
        self.low_hz = nn.Parameter(torch.tensor(hz[:-1] - min_low_hz, dtype=torch.float32)[:, None])
        self.band_hz = nn.Parameter(torch.tensor(np.diff(hz) - min_band_hz, dtype=torch.float32)[:, None])
        taps = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        self.register_buffer("n", taps, persistent=False)
        self.register_buffer("window", torch.hamming_window(kernel_size, periodic=False), persistent=False)

    def filters(self):
        low = self.min_low_hz + self.low_hz.abs()
        high = (low + self.min_band_hz + self.band_hz.abs()).clamp(self.min_low_hz, self.sample_rate / 2)
        n = self.n
        n_safe = torch.where(n == 0, torch.ones_like(n), n)
        two_pi_n = 2 * math.pi * n_safe / self.sample_rate
        sides = (torch.sin(high * two_pi_n) - torch.sin(low * two_pi_n)) / (math.pi * n_safe)
        centre = 2 * (high - low) / self.sample_rate
        band_pass = torch.where(n == 0, centre, sides) / centre  # unit gain at the centre tap
        return (band_pass * self.window)[:, None, :]  # (channels, 1, kernel)

    def forward(self, x):
        return F.conv1d(x, self.filters())


class ConvBlock(nn.Module):
    """Pad so that N samples give N // stride outputs, convolve, batch-normalise, PReLU."""

    def __init__(self, conv, channels, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.left_pad = (kernel - stride) // 2
        self.right_pad = kernel - stride - self.left_pad
        self.conv = conv
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x):
        return self.act(self.norm(self.conv(F.pad(x, (self.left_pad, self.right_pad)))))


class PASEEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        sinc = SincConv(cfg.sinc_channels, cfg.sinc_kernel, cfg.sample_rate, cfg.sinc_min_low_hz, cfg.sinc_min_band_hz)
        blocks = [ConvBlock(sinc, cfg.sinc_channels, cfg.sinc_kernel, 1)]
        channels = cfg.sinc_channels
        for out, kernel, stride in zip(cfg.conv_channels, cfg.conv_kernels, cfg.conv_strides):
            blocks.append(ConvBlock(nn.Conv1d(channels, out, kernel, stride), out, kernel, stride))
            channels = out
        self.blocks = nn.ModuleList(blocks)
        self.project = nn.Conv1d(channels, cfg.embedding_dim, 1)
        self.norm = nn.BatchNorm1d(cfg.embedding_dim, affine=False)  # embeddings at unit scale

        self.hop = math.prod(b.stride for b in blocks)
        self.receptive_field, self.left_context, jump = 1, 0, 1
        for b in blocks:
            self.receptive_field += (b.kernel - 1) * jump
            self.left_context += b.left_pad * jump
            jump *= b.stride

    def forward(self, wave):
        """(B, N) -> (B, D, N // hop)."""
        if wave.shape[-1] < self.hop:
            raise ValueError(f"PASE needs at least {self.hop} samples, got {wave.shape[-1]}")
        x = wave[:, None, :]
        for block in self.blocks:
            x = block(x)
        return self.norm(self.project(x))


class FrameRegressor(nn.Module):
    """Frames (B, D, T) -> (B, out, T): a small MLP per frame with a little temporal context."""

    def __init__(self, dim, hidden, out, context=3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(dim, hidden, context, padding=context // 2), nn.PReLU(hidden), nn.Conv1d(hidden, out, 1)
        )

    def forward(self, frames):
        return self.net(frames)


class PairDiscriminator(nn.Module):
    """Two embeddings (B, D) each -> a logit that they come from the same chunk."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.PReLU(hidden), nn.Linear(hidden, 1))

    def forward(self, a, b):
        return self.net(torch.cat([a, b], dim=-1)).squeeze(-1)


class TargetNorm(nn.Module):
    """Standardises a target with running per-channel statistics (saved in the state dict).

    The first max_count batches are averaged with equal weight, later ones
    with weight 1 / max_count, so the targets' scale settles in a few steps and
    every worker's loss is of order 1.
    """

    def __init__(self, channels, max_count=1000):
        super().__init__()
        self.max_count = max_count
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, target):
        if self.training:
            with torch.no_grad():
                weight = 1.0 / min(self.count.item() + 1, self.max_count)
                self.mean.lerp_(target.mean(dim=(0, 2)).float(), weight)
                self.var.lerp_(target.var(dim=(0, 2), unbiased=False).float(), weight)
                self.count += 1
        return (target - self.mean[:, None]) / (self.var[:, None] + 1e-5).sqrt()


class PASE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder = PASEEncoder(cfg)
        self.hop = self.encoder.hop  # samples per frame
        self.receptive_field = self.encoder.receptive_field  # samples one frame sees
        self.left_context = self.encoder.left_context  # of which before t * hop
        self.weights = {name: w for name, w in cfg.worker_weights.items() if w > 0}
        dim, hidden = cfg.embedding_dim, cfg.worker_hidden
        sizes = {"waveform": self.hop, "lps": cfg.n_fft // 2 + 1, "mfcc": cfg.n_mfcc, "prosody": 4}
        self.workers = nn.ModuleDict()
        self.target_norms = nn.ModuleDict()
        for name in self.weights:
            if name in sizes:
                self.workers[name] = FrameRegressor(dim, hidden, sizes[name])
            else:
                self.workers[name] = PairDiscriminator(dim, hidden)
            if name in REGRESSION_TARGETS:
                self.target_norms[name] = TargetNorm(sizes[name])

    def encode(self, wave):
        """Waveform (B, N) at cfg.sample_rate -> frames (B, N // hop, embedding_dim), one per 10 ms."""
        return self.encoder(wave).transpose(1, 2)

    def targets(self, wave, f0=None):
        """The regression workers' targets of a chunk (B, N): {name: (B, C, N // hop)}."""
        return worker_targets(self.cfg, wave, f0)

    def forward(self, wave, targets=None):
        """Training step: chunks (B, N) -> per-worker losses (unweighted) and their weighted `total`.

        targets: this chunk's `targets(wave, f0)`. Training computes them in the data
        pipeline (data/pase_chunks.py, ChunkTargets); computed here when not given, which
        needs no F0 only when the prosody worker is off.
        """
        frames = self.encoder(wave)  # (B, D, T)
        num_frames = frames.shape[-1]
        if targets is None:
            targets = self.targets(wave)
        losses = {}
        for name, worker in self.workers.items():
            if name == "waveform":
                predicted = worker(frames).transpose(1, 2).reshape(wave.shape[0], -1)
                losses[name] = F.l1_loss(predicted, wave[:, : num_frames * self.hop])
            elif name in REGRESSION_TARGETS:
                target = targets[name][..., :num_frames].to(frames.dtype)
                predicted = worker(frames)
                normalized = self.target_norms[name](target)
                if name == "prosody":  # voicing is a class, the rest are values
                    values = [0, 2, 3]
                    values_loss = F.mse_loss(predicted[:, values], normalized[:, values])
                    losses[name] = values_loss + F.binary_cross_entropy_with_logits(predicted[:, 1], target[:, 1])
                else:
                    losses[name] = F.mse_loss(predicted, normalized)
            else:
                losses[name] = self._infomax(name, worker, frames)
        losses["total"] = sum(self.weights[name] * loss for name, loss in losses.items())
        return losses

    def _infomax(self, name, discriminator, frames):
        """Contrastive worker: frames of one chunk's two halves are a positive pair, another chunk's a negative.

        lim pairs single frames (local), gim pairs the halves' mean frames (global).
        The negative is the same half of another chunk of the batch.
        """
        batch, _, num_frames = frames.shape
        if batch < 2 or num_frames < 2:  # no negative: keep the parameters in the graph for DDP
            return 0.0 * sum(p.sum() for p in discriminator.parameters())
        half = num_frames // 2
        first, second = frames[..., :half], frames[..., half:]
        other = torch.roll(torch.arange(batch, device=frames.device), int(torch.randint(1, batch, ())))
        if name == "lim":
            rows = torch.arange(batch, device=frames.device)
            pick = lambda x: x[rows, :, torch.randint(0, x.shape[-1], (batch,), device=frames.device)]
            anchor, positive, negative = pick(first), pick(second), pick(second[other])
        else:
            anchor, positive, negative = first.mean(-1), second.mean(-1), second[other].mean(-1)
        logits = torch.cat([discriminator(anchor, positive), discriminator(anchor, negative)])
        labels = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(logits)
        return F.binary_cross_entropy_with_logits(logits, labels)


# -----------------------------------------------------------------------------
# speaker seeds


def embed(model, waves, sample_rate, seconds=None):
    """Mean PASE frame of the first `seconds` (all if None) of `waves`, taken in list order -> (D,) float32.

    Utterances are encoded one by one (no frames across a join); the model is
    run in eval mode under inference_mode and left as it was.
    """
    budget = math.inf if seconds is None else round(seconds * model.cfg.sample_rate)
    device = next(model.parameters()).device
    total, count = torch.zeros(model.cfg.embedding_dim, dtype=torch.float64), 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for wave in waves:
                if budget < model.hop:
                    break
                wave = np.asarray(wave, dtype=np.float32)
                if sample_rate != model.cfg.sample_rate:
                    wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=model.cfg.sample_rate)
                wave = wave[: min(len(wave), budget)] if budget < math.inf else wave
                budget -= len(wave)
                if len(wave) < model.hop:
                    continue
                frames = model.encode(torch.tensor(wave)[None].to(device))[0]
                total += frames.double().sum(0).cpu()
                count += frames.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError(f"no audio to embed: need at least {model.hop} samples")
    return (total / count).float().numpy()


def speaker_seed(model, waves, seed_seconds, sample_rate):
    """A speaker's embedding: the mean PASE frame over the first seed_seconds of their audio.

    waves: that speaker's training utterances in a fixed order (the caller sorts
    them, e.g. by utterance id), so the same speaker always gets the same seed.
    """
    return embed(model, waves, sample_rate, seconds=seed_seconds)


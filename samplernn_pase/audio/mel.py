"""The project's one STFT, log-mel spectrogram and Griffin-Lim, in torch.

The HiFi-GAN convention (most TTS code uses it, so mels are comparable with
published vocoders): reflect padding of (n_fft - hop_length) / 2 on each side,
`torch.stft` without centering, magnitude, `librosa.filters.mel`, natural log
clamped at 1e-5. A signal of N samples gives N // hop_length frames.
The filterbank and window are cached per (parameters, device).

`stft` serves every spectrogram of the package: the mels (here), the display
spectrograms (audio/plots.py) and PASE's LPS and MFCC targets
(models/pase_targets.py, librosa's centred frames); `MelAnalysis` is the one
definition of the mel settings that the mel families' configs share.
"""

from dataclasses import dataclass

import torch

_MEL_BASES: dict[tuple, torch.Tensor] = {}
_WINDOWS: dict[tuple, torch.Tensor] = {}
_INVERSE_BASES: dict[tuple, torch.Tensor] = {}


def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None,
              device: torch.device) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney mel filterbank, cached per device."""
    key = (sample_rate, n_fft, n_mels, fmin, fmax, str(device))
    if key not in _MEL_BASES:
        import librosa

        basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        _MEL_BASES[key] = torch.from_numpy(basis).float().to(device)
    return _MEL_BASES[key]


@dataclass
class MelAnalysis:
    """The settings of `mel_spectrogram` but the sample rate, named as in the `model` section of
    the mel families (MelNet, VQ-VAE, CWGAN-GP): their configs and the settings stored with precomputed
    mels (data/mel_crops.py) extend it, so the fields and defaults are written once."""

    n_mels: int = 80
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2

    def analysis_problems(self) -> list[str]:
        """Rules between the analysis fields, as `model.<field>: why` (a config's `model` section)."""
        if self.win_length > self.n_fft:
            return [f"model.win_length: {self.win_length} is longer than model.n_fft {self.n_fft}"]
        return []


def hann_window(win_length: int, device: torch.device) -> torch.Tensor:
    """Periodic Hann window (torch's and librosa's default), cached per device."""
    key = (win_length, str(device))
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(win_length, device=device)
    return _WINDOWS[key]


def stft(audio: torch.Tensor, n_fft: int, hop_length: int, win_length: int, padding: int,
         pad_mode: str = "reflect") -> torch.Tensor:
    """Complex STFT (batch, n_fft // 2 + 1, frames) of audio (batch, samples), Hann window.

    `padding` samples are added at each end (by `pad_mode`: "reflect" or
    "constant") before framing, which decides where frame t sits:
    (n_fft - hop_length) // 2 is the HiFi-GAN convention of the mels (N // hop
    frames), n_fft // 2 centres frame t on sample t * hop_length (librosa's
    and torch's center=True; 1 + N // hop frames).
    """
    audio = torch.nn.functional.pad(audio.unsqueeze(1), (padding, padding), mode=pad_mode).squeeze(1)
    return torch.stft(audio, n_fft, hop_length=hop_length, win_length=win_length,
                      window=hann_window(win_length, audio.device), center=False,
                      normalized=False, onesided=True, return_complex=True)


def magnitude_spectrogram(audio: torch.Tensor, n_fft: int, hop_length: int, win_length: int) -> torch.Tensor:
    """|STFT| (batch, n_fft // 2 + 1, N // hop_length) in the HiFi-GAN convention, what the mels
    are made of (a 1e-9 floor inside the square root keeps its gradient finite at zero)."""
    spectrum = stft(audio, n_fft, hop_length, win_length, (n_fft - hop_length) // 2)
    return torch.sqrt(spectrum.real.pow(2) + spectrum.imag.pow(2) + 1e-9)


def mel_spectrogram(audio: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, win_length: int,
                    n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Log-mel spectrogram (..., n_mels, frames) of audio (..., samples) in [-1, 1]."""
    shape = audio.shape
    audio = audio.reshape(-1, shape[-1]).float()
    magnitude = magnitude_spectrogram(audio, n_fft, hop_length, win_length)
    mel = torch.matmul(mel_basis(sample_rate, n_fft, n_mels, fmin, fmax, audio.device), magnitude)
    log_mel = torch.log(torch.clamp(mel, min=1e-5))
    return log_mel.reshape(*shape[:-1], n_mels, log_mel.shape[-1])


def mel_to_linear(log_mel: torch.Tensor, sample_rate: int, n_fft: int, fmin: float = 0.0,
                  fmax: float | None = None) -> torch.Tensor:
    """Linear magnitude (..., n_fft // 2 + 1, frames) from a log-mel: pseudo-inverse of the
    filterbank (least squares), clamped at zero."""
    n_mels = log_mel.shape[-2]
    key = (sample_rate, n_fft, n_mels, fmin, fmax, str(log_mel.device))
    if key not in _INVERSE_BASES:
        basis = mel_basis(sample_rate, n_fft, n_mels, fmin, fmax, log_mel.device)
        _INVERSE_BASES[key] = torch.linalg.pinv(basis.double()).float()
    return torch.clamp(torch.matmul(_INVERSE_BASES[key], torch.exp(log_mel.float())), min=0.0)


def griffin_lim(log_mel: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, win_length: int,
                fmin: float = 0.0, fmax: float | None = None, num_iterations: int = 32,
                momentum: float = 0.99, seed: int = 0) -> torch.Tensor:
    """Waveform (..., frames * hop_length) from a log-mel (..., n_mels, frames).

    Fast Griffin-Lim (Perraudin et al. 2013): alternate projections between the
    target magnitude and consistent spectrograms, with momentum. The phase
    starts from a seeded random draw so results are reproducible.
    """
    shape = log_mel.shape
    magnitude = mel_to_linear(log_mel.reshape(-1, *shape[-2:]), sample_rate, n_fft, fmin, fmax)
    frames = magnitude.shape[-1]
    length = frames * hop_length
    window = hann_window(win_length, magnitude.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    angles = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * 2 * torch.pi
    phase = torch.polar(torch.ones_like(magnitude), angles)
    previous = torch.zeros_like(phase)

    def to_audio(spectrum):
        return torch.istft(spectrum, n_fft, hop_length=hop_length, win_length=win_length, window=window,
                           center=True, length=length)

    for _ in range(num_iterations):
        audio = to_audio(magnitude * phase)
        rebuilt = stft(audio, n_fft, hop_length, win_length, n_fft // 2)[..., :frames]
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        phase = accelerated / accelerated.abs().clamp(min=1e-8)
        previous = rebuilt
    audio = to_audio(magnitude * phase)
    return audio.reshape(*shape[:-2], length)

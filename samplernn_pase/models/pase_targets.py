"""What the PASE workers regress, computed from a waveform chunk.

Frame t of every target is centred on sample t * hop_length, the convention of
librosa (center=True) and of WORLD (frame t at t * frame_period), so that the
targets line up with each other and with the PASE encoder frames (the encoder
gives N // hop frames for N samples; so do these functions).

Every target is chosen to equal a standard computation that a reader can check:

  lps      log(|STFT|^2 + 1e-10), periodic Hann window, zero-padded centring
           (= log(np.abs(librosa.stft(..., pad_mode="constant"))**2 + 1e-10))
  mfcc     librosa.feature.mfcc with the same STFT, Slaney mel filterbank,
           power_to_db(top_db=80) per chunk, orthonormal DCT-II
  prosody  4 channels per frame:
             0 log-F0 of the given F0, linearly interpolated across unvoiced
               frames (np.interp: ends held), 0 where nothing is voiced
             1 voicing, 1.0 where the F0 is > 0
             2 zero-crossing rate, librosa.feature.zero_crossing_rate
             3 log energy, log(librosa.feature.rms ** 2 + 1e-10)

LPS and MFCC are computed in torch (on the chunk's device) with the project's
STFT and mel filterbank (audio/mel.py). The F0 is an input: the project's one
WORLD F0 analysis (audio/world.py) with the corpus's F0 settings (data config:
f0_method, f0_floor, f0_ceil), computed once per utterance on the encoder's
frame grid by the data side (runners/pase.py, `ChunkTargets`), as for the
features and the metrics. Prosody runs in numpy on the CPU and is moved back.
"""

from functools import lru_cache

import numpy as np
import torch

from ..audio.mel import mel_basis, stft
from ..audio.world import interpolated_log_f0

LOG_EPS = 1e-10  # floor inside every log, as librosa's amin
TOP_DB = 80.0  # librosa.power_to_db default dynamic range
PROSODY_CHANNELS = ("log_f0", "voicing", "zcr", "log_energy")


@lru_cache(maxsize=None)
def _dct_matrix(n_mels, n_mfcc, device):
    """Orthonormal DCT-II as a (n_mfcc, n_mels) matrix (scipy's dct(type=2, norm='ortho'))."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    basis = torch.cos(torch.pi / n_mels * (n + 0.5) * k) * (2.0 / n_mels) ** 0.5
    basis[0] /= 2.0**0.5
    return basis.float().to(device)


def power_spectrogram(wave, n_fft, hop_length, win_length):
    """|STFT|^2 of (B, N) -> (B, n_fft // 2 + 1, 1 + N // hop_length), frames centred on
    t * hop_length with zero padding (librosa's center=True, pad_mode="constant")."""
    spec = stft(wave.float(), n_fft, hop_length, win_length, n_fft // 2, pad_mode="constant")
    return spec.real**2 + spec.imag**2


def log_power_spectrum(power):
    return torch.log(power + LOG_EPS)


def mfcc(power, sample_rate, n_fft, n_mels, n_mfcc):
    """librosa.feature.mfcc from a power spectrogram (B, F, T) -> (B, n_mfcc, T)."""
    mel = mel_basis(sample_rate, n_fft, n_mels, 0.0, None, power.device) @ power
    db = 10.0 * torch.log10(mel.clamp_min(LOG_EPS))
    db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)  # top_db per chunk
    return _dct_matrix(n_mels, n_mfcc, str(power.device)) @ db


def _frames(wave, frame_length, hop_length, pad_mode):
    """Centred frames of a (B, N) numpy array -> (B, 1 + N // hop, frame_length)."""
    half = frame_length // 2
    padded = np.pad(wave, ((0, 0), (half, half)), mode=pad_mode)
    num_frames = 1 + (padded.shape[1] - frame_length) // hop_length
    index = np.arange(frame_length)[None, :] + hop_length * np.arange(num_frames)[:, None]
    return padded[:, index]


def zero_crossing_rate(wave, frame_length, hop_length):
    """librosa.feature.zero_crossing_rate (edge padding, |x| <= 1e-10 counts as 0, 0 is positive)."""
    frames = _frames(wave, frame_length, hop_length, "edge")
    negative = frames < -1e-10
    return (negative[..., 1:] != negative[..., :-1]).sum(-1) / frame_length


def log_energy(wave, frame_length, hop_length):
    """log of the mean square of each frame: log(librosa.feature.rms ** 2 + eps)."""
    frames = _frames(wave.astype(np.float64), frame_length, hop_length, "constant")
    return np.log(np.mean(frames**2, axis=-1) + LOG_EPS)


def prosody(wave, hop_length, win_length, f0):
    """(B, N) numpy -> (B, 4, 1 + N // hop): log-F0, voicing, ZCR, log energy.

    f0: (B, frames) WORLD F0 (Hz, 0 where unvoiced) of the rows, a frame every
    hop_length samples (audio/world.py `world_f0`).
    """
    zcr = zero_crossing_rate(wave, win_length, hop_length)
    energy = log_energy(wave, win_length, hop_length)
    out = np.zeros((wave.shape[0], 4, zcr.shape[1]), dtype=np.float32)
    for b in range(wave.shape[0]):
        n = min(len(f0[b]), zcr.shape[1])
        out[b, 0, :n] = interpolated_log_f0(f0[b])[:n]
        out[b, 1, :n] = f0[b][:n] > 0
    out[:, 2] = zcr
    out[:, 3] = energy
    return out


def compute_targets(
    wave,
    sample_rate,
    frames,
    *,
    hop_length=None,
    n_fft=512,
    win_length=400,
    n_mels=40,
    n_mfcc=20,
    workers=("lps", "mfcc", "prosody"),
    f0=None,
):
    """Worker targets of a chunk: wave (B, N) or (N,) -> {name: (B, C, frames)} float tensors.

    hop_length defaults to 10 ms; pass the encoder's hop and frames = N // hop
    to line the targets up with the encoder frames. Only the named workers'
    targets are computed; prosody needs `f0`, (B, >= frames) WORLD F0 of the
    rows on the same frame grid.
    """
    wave = torch.as_tensor(wave)
    if wave.dim() == 1:
        wave = wave[None]
    if frames < 1:
        raise ValueError(f"need at least one frame, got {frames}")
    hop_length = hop_length or round(sample_rate / 100)
    if frames > 1 + wave.shape[-1] // hop_length:
        most = 1 + wave.shape[-1] // hop_length
        raise ValueError(f"{wave.shape[-1]} samples give at most {most} frames, asked for {frames}")
    out = {}
    if "lps" in workers or "mfcc" in workers:
        power = power_spectrogram(wave, n_fft, hop_length, win_length)[..., :frames]
        if "lps" in workers:
            out["lps"] = log_power_spectrum(power)
        if "mfcc" in workers:
            out["mfcc"] = mfcc(power, sample_rate, n_fft, n_mels, n_mfcc)
    if "prosody" in workers:
        if f0 is None:
            raise ValueError("the prosody target needs the rows' F0 (audio/world.py world_f0)")
        values = prosody(wave.detach().cpu().double().numpy(), hop_length, win_length, np.asarray(f0)[:, :frames])
        out["prosody"] = torch.from_numpy(values[..., :frames]).to(wave.device)
    return out

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
             0 log-F0, the project's WORLD F0 (audio/world.py) by dio +
               stonemask, linearly interpolated across unvoiced frames
               (np.interp: ends held), 0 where nothing is voiced
             1 voicing, 1.0 where pyworld found F0 > 0
             2 zero-crossing rate, librosa.feature.zero_crossing_rate
             3 log energy, log(librosa.feature.rms ** 2 + 1e-10)

LPS and MFCC are computed in torch (on the chunk's device) with the project's
STFT and mel filterbank (audio/mel.py); F0 needs pyworld, so prosody runs in
numpy on the CPU and is moved back.
"""

from functools import lru_cache

import numpy as np
import torch

from ..audio.mel import mel_basis, stft
from ..audio.world import interpolated_log_f0, world_f0

LOG_EPS = 1e-10  # floor inside every log, as librosa's amin
TOP_DB = 80.0  # librosa.power_to_db default dynamic range
PROSODY_CHANNELS = ("log_f0", "voicing", "zcr", "log_energy")
# DIO + StoneMask rather than Harvest: PASE computes the F0 of every training utterance
# (runners/pase.py) and Harvest is about 10x slower; the search range is the model config's.
PROSODY_F0_METHOD = "dio"


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


def prosody_f0(wave, sample_rate, hop_length, f0_floor, f0_ceil):
    """F0 (Hz, 0 where unvoiced) of one utterance behind the prosody target, a frame every
    hop_length samples: audio/world.py's WORLD F0 with PROSODY_F0_METHOD."""
    return world_f0(wave, sample_rate, hop_length, f0_floor, f0_ceil, PROSODY_F0_METHOD)[0]


def prosody(wave, sample_rate, hop_length, win_length, f0_floor, f0_ceil, f0=None):
    """(B, N) numpy -> (B, 4, 1 + N // hop): log-F0, voicing, ZCR, log energy.

    f0: (B, frames) WORLD F0 of the rows computed beforehand (e.g. once per
    utterance, see `prosody_f0`); None computes it here from each row.
    """
    zcr = zero_crossing_rate(wave, win_length, hop_length)
    energy = log_energy(wave, win_length, hop_length)
    out = np.zeros((wave.shape[0], 4, zcr.shape[1]), dtype=np.float32)
    given = f0
    for b in range(wave.shape[0]):
        f0 = prosody_f0(wave[b], sample_rate, hop_length, f0_floor, f0_ceil) if given is None else given[b]
        n = min(len(f0), zcr.shape[1])
        out[b, 0, :n] = interpolated_log_f0(f0)[:n]
        out[b, 1, :n] = f0[:n] > 0
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
    f0_floor=60.0,
    f0_ceil=600.0,
    workers=("lps", "mfcc", "prosody"),
    f0=None,
):
    """Worker targets of a chunk: wave (B, N) or (N,) -> {name: (B, C, frames)} float tensors.

    hop_length defaults to 10 ms; pass the encoder's hop and frames = N // hop
    to line the targets up with the encoder frames. Only the named workers'
    targets are computed: prosody is the slow one (pyworld), unless `f0`
    (B, >= frames) gives the rows' WORLD F0, computed beforehand.
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
        values = prosody(wave.detach().cpu().double().numpy(), sample_rate, hop_length, win_length, f0_floor, f0_ceil,
                         f0=None if f0 is None else np.asarray(f0)[:, :frames])
        out["prosody"] = torch.from_numpy(values[..., :frames]).to(wave.device)
    return out

"""audio/mel.py, audio/world.py, audio/plots.py's spectrogram and audio/io.py."""

import numpy as np
import pytest
import soundfile
import torch

from samplernn_pase.audio.io import read_audio, write_wav
from samplernn_pase.audio.mel import griffin_lim, mel_spectrogram
from samplernn_pase.audio.plots import log_spectrogram
from samplernn_pase.audio.world import F0_METHODS, interpolated_log_f0, world_f0

MEL = dict(sample_rate=16000, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, fmin=0.0, fmax=8000.0)


def test_mel_spectrogram_shape_and_peak():
    t = torch.arange(16000) / 16000
    audio = torch.stack([0.5 * torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 2000 * t)])
    log_mel = mel_spectrogram(audio, **MEL)
    assert log_mel.shape == (2, 80, 16000 // 256)
    peaks = log_mel.mean(-1).argmax(-1)
    assert peaks[1] > peaks[0] + 10  # the 2 kHz tone sits in a higher band
    assert log_mel.min() >= np.log(1e-5) - 1e-6


def test_griffin_lim_reconstructs_the_spectrogram(demo_corpus_path):
    audio, _, _ = read_audio(demo_corpus_path / "m1" / "m1_001.wav", 16000)
    audio = torch.from_numpy(audio[: 256 * 100])
    log_mel = mel_spectrogram(audio, **MEL)
    waveform = griffin_lim(log_mel, **{k: v for k, v in MEL.items() if k != "n_mels"}, num_iterations=32)
    assert waveform.shape == (256 * 100,)
    rebuilt = mel_spectrogram(waveform, **MEL)
    error = (rebuilt - log_mel).abs().mean().item()
    assert error < 1.0, error  # noise would be several nats off
    noise = mel_spectrogram(torch.randn_like(audio) * audio.std(), **MEL)
    assert (noise - log_mel).abs().mean().item() > 2 * error


def test_read_audio_downmixes_and_resamples(tmp_path):
    t = np.arange(44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 200 * t)
    soundfile.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), 44100)
    audio, rate, info = read_audio(tmp_path / "s.wav", 16000)
    assert rate == 16000 and audio.dtype == np.float32 and abs(len(audio) - 16000) <= 1
    assert info["resampled"] and info["downmixed"]
    assert abs(np.abs(audio[1000:-1000]).max() - 0.25) < 0.01  # mean of the two channels


def test_write_wav_is_atomic_and_clips(tmp_path):
    write_wav(tmp_path / "out" / "a.wav", np.array([0.0, 2.0, -2.0, 0.5]), 16000)
    audio, rate = soundfile.read(tmp_path / "out" / "a.wav")
    assert rate == 16000 and audio[1] > 0.999 and audio[2] < -0.999
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.wav"]


def test_mel_spectrogram_equals_librosa(demo_corpus_path):
    """The HiFi-GAN-convention log-mel against librosa's own STFT and filterbank: reflect
    padding of (n_fft - hop) / 2, uncentred frames, magnitude (power 1), natural log floored at 1e-5."""
    import librosa

    audio, _, _ = read_audio(demo_corpus_path / "f1" / "f1_001.wav", 16000)
    audio = audio[: 256 * 60].astype(np.float64)
    settings = dict(sample_rate=16000, n_fft=1024, hop_length=256, win_length=800, n_mels=64, fmin=40.0, fmax=7600.0)
    ours = mel_spectrogram(torch.from_numpy(audio), **settings).double().numpy()
    padding = (1024 - 256) // 2
    mel = librosa.feature.melspectrogram(y=np.pad(audio, padding, mode="reflect"), sr=16000, n_fft=1024,
                                         hop_length=256, win_length=800, center=False, power=1.0,
                                         n_mels=64, fmin=40.0, fmax=7600.0)
    assert ours.shape == mel.shape == (64, 60)
    # In linear magnitude: the 1e-9 floor inside our square root adds < 1e-5 to a mel band.
    np.testing.assert_allclose(np.exp(ours), np.maximum(mel, 1e-5), rtol=1e-4, atol=1e-5)


def test_display_spectrogram_is_the_mels_stft():
    """A 1 kHz tone peaks in bin 1000 / 16000 * n_fft; N samples give N // hop frames."""
    t = np.arange(16000) / 16000
    image = log_spectrogram(0.5 * np.sin(2 * np.pi * 1000 * t), n_fft=512, hop=128)
    assert image.shape == (257, 16000 // 128)
    assert (image[:, 1:-1].argmax(axis=0) == 32).all()  # the end frames see the reflected edge


def harmonic_tone(f0: float, seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    """A voiced-like tone: the first eight harmonics of f0 with 1 / k amplitudes."""
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9))


@pytest.mark.parametrize("method", F0_METHODS)
def test_world_f0_finds_a_known_f0_and_no_f0_in_noise(method):
    for f0_true in (110.0, 230.0):
        f0, times = world_f0(harmonic_tone(f0_true), 16000, 80, 50.0, 600.0, method)
        assert len(f0) == 16000 // 80 + 1
        np.testing.assert_allclose(times, np.arange(len(f0)) * 80 / 16000)
        inner = f0[10:-10]  # away from the edges of the tone
        assert (inner > 0).mean() > 0.95
        assert np.median(np.abs(inner[inner > 0] / f0_true - 1)) < 0.01
    noise = np.random.default_rng(0).normal(0, 0.1, 16000)
    f0, _ = world_f0(noise, 16000, 80, 50.0, 600.0, method)
    assert (f0 > 0).mean() < 0.2


def test_interpolated_log_f0_fills_unvoiced_frames():
    f0 = np.array([0.0, 100.0, 0.0, 0.0, 400.0, 0.0])
    expected = np.log([100.0, 100.0, 100.0 * 4 ** (1 / 3), 100.0 * 4 ** (2 / 3), 400.0, 400.0])  # linear in log F0
    np.testing.assert_allclose(interpolated_log_f0(f0), expected)
    assert not interpolated_log_f0(np.zeros(4)).any()

"""audio/mel.py and audio/io.py."""

import numpy as np
import soundfile
import torch

from samplernn_pase.audio.io import read_audio, write_wav
from samplernn_pase.audio.mel import griffin_lim, mel_spectrogram

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

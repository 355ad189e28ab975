"""PASE encoder, worker targets, training signal and speaker seeds (issue 6)."""

import json
from pathlib import Path

import jsonschema
import librosa
import numpy as np
import pytest
import pyworld
import torch

from samplernn_pase.audio.world import world_f0
from samplernn_pase.errors import UserError
from samplernn_pase.metrics.speaker import cosine_similarity, speaker_similarity
from samplernn_pase.models.pase import PASE, PASEConfig, embed, speaker_seed
from samplernn_pase.models.pase_targets import compute_targets

SR = 16000
HOP = 160
SCHEMA = Path(__file__).resolve().parents[1] / "samplernn_pase" / "experiment" / "schema" / "model_pase.json"


def tiny_config(**overrides):
    cfg = dict(
        sinc_channels=8, sinc_kernel=65, conv_channels=(16, 32, 32), conv_kernels=(20, 8, 8), conv_strides=(10, 4, 4),
        embedding_dim=16, worker_hidden=32,
    )
    return PASEConfig(**{**cfg, **overrides})


def f0_of(rows) -> np.ndarray:
    """(B, frames) WORLD F0 of each row on the 10 ms grid, with the data config's default
    settings (dio, 50-600 Hz): what the PASE runner gives with the chunks."""
    return np.stack([world_f0(row, SR, HOP, 50.0, 600.0, "dio")[0] for row in np.atleast_2d(rows)])


def synthetic_speech(seconds, f0_mean=140.0, seed=0):
    """Speech-like audio: harmonic 'vowels' with a gliding F0, noise bursts, silences. Also returns the true F0."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = f0_mean * (1 + 0.25 * np.sin(2 * np.pi * 0.8 * t) + 0.1 * np.sin(2 * np.pi * 2.7 * t + 1.0))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    harmonics = sum(np.sin(k * phase) / k * (k * f0 < SR / 2 - 500) for k in range(1, 30))
    noise = np.diff(rng.standard_normal(n + 1))  # high-passed white noise, a fricative
    segment = int(0.2 * SR)
    kinds = rng.choice(["voiced", "noise", "silence"], size=n // segment + 1, p=[0.6, 0.25, 0.15])
    kinds[0] = "voiced"
    ramp = np.minimum(1.0, np.minimum(np.arange(segment), np.arange(segment)[::-1]) / (0.01 * SR))
    y = np.zeros(n)
    voiced = np.zeros(n, dtype=bool)
    for i, kind in enumerate(kinds):
        s = slice(i * segment, min(n, (i + 1) * segment))
        length = s.stop - s.start
        if kind == "voiced":
            y[s] = 0.3 * harmonics[s] * ramp[:length] * rng.uniform(0.5, 1.0)
            voiced[s] = True
        elif kind == "noise":
            y[s] = 0.05 * noise[s] * ramp[:length]
    y += 1e-4 * rng.standard_normal(n)
    return y.astype(np.float32), f0, voiced


# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("num_samples, frames", [(16000, 100), (40000, 250), (16000 + 159, 100), (160, 1)])
def test_encoder_gives_a_frame_every_10_ms(num_samples, frames):
    torch.manual_seed(0)
    model = PASE(tiny_config()).eval()
    assert model.hop == HOP
    with torch.no_grad():
        out = model.encode(torch.randn(3, num_samples) * 0.1)
    assert out.shape == (3, frames, 16)
    assert SR / model.hop == 100


def test_default_encoder_frame_rate_and_dimension():
    cfg = PASEConfig()
    model = PASE(cfg).eval()
    with torch.no_grad():
        out = model.encode(torch.randn(1, 2 * SR) * 0.1)
    assert out.shape == (1, 200, cfg.embedding_dim)


def test_strides_must_make_10_ms():
    with pytest.raises(ValueError, match="10 ms"):
        tiny_config(conv_strides=(10, 4, 2))


@pytest.mark.parametrize("make_config", [tiny_config, PASEConfig], ids=["tiny", "default"])
def test_receptive_field_matches_a_gradient_probe(make_config):
    torch.manual_seed(0)
    model = PASE(make_config()).double().eval()
    num_samples, t = 12000, 37
    wave = (torch.randn(1, num_samples, dtype=torch.float64) * 0.1).requires_grad_()
    model.encode(wave)[0, t].sum().backward()
    touched = torch.nonzero(wave.grad[0]).flatten()
    first, last = int(touched[0]), int(touched[-1])
    assert last - first + 1 == model.receptive_field
    assert first == t * model.hop - model.left_context
    assert first > 0 and last < num_samples - 1  # the probe saw the whole field, not the padding


def test_frames_are_independent_of_the_batch_in_eval():
    torch.manual_seed(0)
    model = PASE(tiny_config()).eval()
    wave = torch.randn(3, 8000) * 0.1
    with torch.no_grad():
        together = model.encode(wave)
        alone = model.encode(wave[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- targets


@pytest.fixture(scope="module")
def speech():
    y, f0, voiced = synthetic_speech(2.0, seed=1)
    return y, f0, voiced


def test_lps_equals_librosa_stft(speech):
    y = speech[0]
    frames = len(y) // HOP
    lps = compute_targets(torch.from_numpy(y), SR, frames, workers=("lps",))["lps"][0].double().numpy()
    stft = librosa.stft(y.astype(np.float64), n_fft=512, hop_length=HOP, win_length=400, pad_mode="constant")
    reference = np.log(np.abs(stft) ** 2 + 1e-10)[:, :frames]
    assert lps.shape == reference.shape == (257, frames)
    audible = reference > reference.max() - np.log(1e7)  # float32 STFT: compare the top 70 dB
    np.testing.assert_allclose(lps[audible], reference[audible], atol=1e-2)
    assert audible.mean() > 0.5


def test_mfcc_equals_librosa(speech):
    y = speech[0]
    frames = len(y) // HOP
    mfcc = compute_targets(torch.from_numpy(y), SR, frames, workers=("mfcc",))["mfcc"][0].double().numpy()
    reference = librosa.feature.mfcc(
        y=y.astype(np.float64), sr=SR, n_mfcc=20, n_fft=512, hop_length=HOP, win_length=400, n_mels=40,
        pad_mode="constant",
    )[:, :frames]
    assert mfcc.shape == reference.shape == (20, frames)
    np.testing.assert_allclose(mfcc, reference, atol=2e-2 * np.abs(reference).max())
    np.testing.assert_allclose(mfcc, reference, atol=0.05, rtol=1e-3)


def test_prosody_equals_pyworld_and_librosa(speech):
    y, true_f0, true_voiced = speech
    frames = len(y) // HOP
    given = f0_of(y)
    prosody = compute_targets(torch.from_numpy(y), SR, frames, workers=("prosody",), f0=given)["prosody"]
    log_f0, voicing, zcr, energy = prosody[0].double().numpy()
    assert prosody.shape == (1, 4, frames)

    x = y.astype(np.float64)
    f0, times = pyworld.dio(x, SR, f0_floor=50.0, f0_ceil=600.0, frame_period=10.0)
    f0 = pyworld.stonemask(x, f0, times, SR)
    np.testing.assert_array_equal(given[0], f0)  # the project's F0 is WORLD's
    f0 = f0[:frames]
    voiced = f0 > 0
    np.testing.assert_array_equal(voicing, voiced.astype(float))
    np.testing.assert_allclose(log_f0[voiced], np.log(f0[voiced]), atol=1e-5)
    idx = np.arange(frames)
    np.testing.assert_allclose(log_f0, np.interp(idx, idx[voiced], np.log(f0[voiced])), atol=1e-5)

    reference_zcr = librosa.feature.zero_crossing_rate(y, frame_length=400, hop_length=HOP)[0, :frames]
    np.testing.assert_allclose(zcr, reference_zcr, atol=1e-6)
    rms = librosa.feature.rms(y=x, frame_length=400, hop_length=HOP, pad_mode="constant")[0, :frames]
    np.testing.assert_allclose(energy, np.log(rms**2 + 1e-10), atol=1e-4)

    # and they mean what they say: the F0 follows the synthesised one where it is clearly voiced
    centre = np.minimum(idx * HOP, len(y) - 1)
    before, after = np.maximum(centre - 400, 0), np.minimum(centre + 400, len(y) - 1)
    clearly_voiced = true_voiced[centre] & true_voiced[before] & true_voiced[after]
    assert voicing[clearly_voiced].mean() > 0.9
    assert np.median(np.abs(np.exp(log_f0[clearly_voiced]) / true_f0[centre][clearly_voiced] - 1)) < 0.03
    assert voicing[~true_voiced[centre]].mean() < 0.3
    with pytest.raises(ValueError, match="F0"):
        compute_targets(torch.from_numpy(y), SR, frames, workers=("prosody",))


def test_targets_of_a_batch_are_those_of_each_chunk(speech):
    y = speech[0]
    batch = torch.from_numpy(np.stack([y[:8000], 0.1 * y[8000:16000]]))
    f0 = f0_of(batch.numpy())
    together = compute_targets(batch, SR, 50, f0=f0)
    for b in range(2):
        alone = compute_targets(batch[b], SR, 50, f0=f0[b:b + 1])
        for name in ("lps", "mfcc", "prosody"):
            assert together[name].shape[1:] == alone[name].shape[1:]
            torch.testing.assert_close(together[name][b], alone[name][0], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- training signal


def test_total_loss_falls_on_speech_like_audio():
    torch.manual_seed(0)
    model = PASE(tiny_config())
    chunk = SR // 2
    low, high = synthetic_speech(1.5, f0_mean=120.0, seed=2)[0], synthetic_speech(1.5, f0_mean=220.0, seed=3)[0]
    audio = np.concatenate([low, high])
    wave = torch.from_numpy(audio[: 6 * chunk].reshape(6, chunk))
    targets = model.targets(wave, f0_of(wave.numpy()))
    assert set(targets) == {"lps", "mfcc", "prosody"}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = model(wave, targets)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert set(history[0]) == {"waveform", "lps", "mfcc", "prosody", "lim", "gim", "total"}
    assert all(np.isfinite(v) for step in history for v in step.values())
    first = np.mean([h["total"] for h in history[:5]])
    last = np.mean([h["total"] for h in history[-5:]])
    assert last < 0.7 * first, (first, last)
    for name in ("lps", "mfcc", "prosody"):
        assert np.mean([h[name] for h in history[-5:]]) < np.mean([h[name] for h in history[:5]]), name


def test_total_is_the_weighted_sum_and_zero_weight_workers_are_not_built():
    torch.manual_seed(0)
    weights = {"waveform": 0.5, "lps": 2.0, "mfcc": 0.0, "prosody": 0.0, "lim": 1.0, "gim": 0.0}
    model = PASE(tiny_config(worker_weights=weights))
    assert set(model.workers) == {"waveform", "lps", "lim"}
    losses = model(torch.randn(2, 4000) * 0.1)
    assert set(losses) == {"waveform", "lps", "lim", "total"}
    expected = 0.5 * losses["waveform"] + 2.0 * losses["lps"] + losses["lim"]
    torch.testing.assert_close(losses["total"], expected)


# ----------------------------------------------------------------------------- speaker seeds


@pytest.fixture(scope="module")
def seed_model():
    torch.manual_seed(0)
    return PASE(tiny_config())


def utterances(f0_mean, seed):
    return [synthetic_speech(s, f0_mean=f0_mean, seed=seed + i)[0] for i, s in enumerate([0.7, 1.1, 0.9])]


def test_speaker_seed_is_deterministic_and_uses_the_first_seconds(seed_model):
    waves = utterances(130.0, seed=10)
    seed_model.train()
    first = speaker_seed(seed_model, waves, seed_seconds=1.5, sample_rate=SR)
    assert seed_model.training  # left as it was
    second = speaker_seed(seed_model.eval(), waves, seed_seconds=1.5, sample_rate=SR)
    seed_model.train()
    assert first.shape == (16,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)

    # 1.5 s = all of the first utterance and 0.8 s of the second; the third never counts
    changed_after = [waves[0], np.concatenate([waves[1][:12800], -waves[1][12800:]]), np.zeros_like(waves[2])]
    np.testing.assert_array_equal(first, speaker_seed(seed_model, changed_after, 1.5, SR))
    changed_within = [waves[0], np.concatenate([-waves[1][:12800], waves[1][12800:]]), waves[2]]
    assert not np.allclose(first, speaker_seed(seed_model, changed_within, 1.5, SR))

    with torch.no_grad():
        seed_model.eval()
        frames = torch.cat([seed_model.encode(torch.from_numpy(w)[None])[0] for w in (waves[0], waves[1][:12800])])
    seed_model.train()
    assert frames.shape[0] == 150
    np.testing.assert_allclose(first, frames.mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_speaker_seed_resamples_other_rates(seed_model):
    wave = synthetic_speech(1.0, seed=5)[0]
    at_8k = librosa.resample(wave, orig_sr=SR, target_sr=8000)
    seed_16k = speaker_seed(seed_model, [wave], 1.0, SR)
    seed_8k = speaker_seed(seed_model, [at_8k], 1.0, 8000)
    assert seed_8k.shape == seed_16k.shape
    assert cosine_similarity(seed_8k, seed_16k) > 0.9


def test_speaker_similarity(seed_model):
    low = utterances(110.0, seed=20)
    same = speaker_similarity(seed_model, low[0], low, SR, seed_seconds=3.0)
    assert -1.0 <= same <= 1.0
    by_hand = cosine_similarity(embed(seed_model, [low[0]], SR), embed(seed_model, low, SR, seconds=3.0))
    assert same == pytest.approx(by_hand)
    assert speaker_similarity(seed_model, low[0], [low[0]], SR) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="no audio"):
        speaker_seed(seed_model, [np.zeros(10, np.float32)], 1.0, SR)


# ----------------------------------------------------------------------------- config schema


def test_schema_defaults_are_the_dataclass_defaults():
    schema = json.loads(SCHEMA.read_text())
    defaults = {name: spec["default"] for name, spec in schema["properties"].items()}
    assert defaults == PASEConfig().to_dict()
    assert schema["required"] == ["type"] and schema["properties"]["type"]["const"] == "pase"
    for name, spec in schema["properties"].items():
        assert spec.get("description"), name
    for name, spec in schema["properties"]["worker_weights"]["properties"].items():
        assert spec.get("description") and "default" in spec, name
    jsonschema.validate(PASEConfig().to_dict(), schema)
    jsonschema.validate({"type": "pase"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "pase", "worker_weights": {"pitch": 1.0}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "samplernn"}, schema)


def test_config_round_trips_through_its_json_section():
    cfg = tiny_config(worker_weights={"lim": 0.0})
    section = json.loads(json.dumps(cfg.to_dict()))
    assert PASEConfig.from_dict(section) == cfg
    assert cfg.worker_weights["lim"] == 0.0 and cfg.worker_weights["mfcc"] == 1.0
    with pytest.raises(UserError, match="model.embeding_dim: unknown setting"):
        PASEConfig.from_dict({"type": "pase", "embeding_dim": 3})

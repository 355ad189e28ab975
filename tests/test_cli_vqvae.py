"""Mel VQ-VAE on the real CLI and demo corpus: init stores the mels, train and test write
wav + PNG + metrics.json, and SIGKILL with the discriminator active resumes exactly."""

import json
import re
from pathlib import Path

import numpy as np
import soundfile
import torch

from test_cli_samplernn import Workspace, sigkill_at_iteration_then_resume

ROOT = Path(__file__).resolve().parents[1]
LOSS_RE = re.compile(r"epoch (\d+) iteration (\d+) autoencoder_loss (\S+)(?: discriminator_loss (\S+))?")


def tiny_vqvae_config(**training) -> dict:
    config = json.loads((ROOT / "configs" / "vqvae.json").read_text())
    config["data"].update({"train_seconds_per_speaker": 3.0, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 1.0})
    config["model"].update({"n_mels": 16, "crop_frames": 32, "channels": 8, "channel_multipliers": [1, 2, 2],
                            "downsample_freq": 4, "downsample_time": 4, "codebook_size": 16,
                            "codebook_dim": 8, "dead_code_steps": 3, "disc_start": 4,
                            "disc_channels": 8, "disc_layers": 2})
    config["training"].update({"batch_size": 4, "max_epochs": 1, "log_period": 1, "checkpoint_period": 4,
                               **training})
    config["test"].update({"utterances": 2, "max_seconds": 0.64, "period": 1})
    return config


def logged_losses(experiment: Path) -> dict:
    """Iteration -> (epoch, autoencoder loss, discriminator loss or None) from verbose.log."""
    losses = {}
    for line in (experiment / "verbose.log").read_text().splitlines():
        match = LOSS_RE.search(line)
        if match:
            discriminator = None if match.group(4) is None else float(match.group(4))
            losses[int(match.group(2))] = (int(match.group(1)), float(match.group(3)), discriminator)
    return losses


def test_vqvae_init_train_test_write_audio_images_and_metrics(tmp_path, demo_data_path):
    space = Workspace(tmp_path, demo_data_path)
    bad = tiny_vqvae_config()
    bad["model"]["downsample_time"] = 8                 # 2 downsamplings cannot give 8
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = space.run("bad", "init", "--config-path", str(tmp_path / "bad.json"), check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "model.channel_multipliers" in result.stderr and not space.experiment("bad").exists()
    space.init("vq", tiny_vqvae_config())
    root = space.experiment("vq")
    with np.load(root / "mels.npz", allow_pickle=False) as mels:
        assert mels["mels"].shape[0] == 16 and mels["mels"].dtype == np.float16
    space.run("vq", "train")
    losses = logged_losses(root)
    assert losses[4][2] is None and losses[5][2] is not None     # the discriminator from batch 4 on
    for results in (root / "results" / "epoch-1", None):
        if results is None:                                        # `test` renders the same again
            (root / "results" / "epoch-1" / "metrics.json").unlink()
            space.run("vq", "test")
            results = root / "results" / "epoch-1"
        wavs = sorted(results.glob("*.wav"))
        # Each reconstruction beside its real recording and the original mel's Griffin-Lim.
        assert len(wavs) == 6 and len(list(results.glob("*.png"))) == 2
        assert sum(w.name.endswith(".real.wav") for w in wavs) == 2
        assert sum(w.name.endswith(".griffin_lim.wav") for w in wavs) == 2
        for wav in wavs:
            audio, rate = soundfile.read(wav)
            assert rate == 16000 and len(audio) >= 0.3 * 16000 and np.isfinite(audio).all()
        judged = json.loads((results / "metrics.json").read_text())
        assert set(judged["references"]) == {"real", "griffin_lim"}
        assert 0 < judged["mean"]["dnsmos_ovrl"] <= 5 and "log_mel" in judged["frechet"]
        metrics = judged["mean"]
        # After one epoch the reconstruction's scale is anything (10.3 seen on CI): finite and
        # positive is what can be asked; the closed forms are in test_vqvae_model.py.
        for key in ("mel_l1", "spectral_convergence", "baseline_mel_l1", "baseline_spectral_convergence"):
            assert 0 < metrics[key] < float("inf"), key
        assert 1 <= metrics["codebook_codes_used"] <= 16 and metrics["codebook_size"] == 16
        assert 1 <= metrics["codebook_perplexity"] <= metrics["codebook_codes_used"]
    state = torch.load(root / "checkpoints" / "1.checkpoint.pt", weights_only=True)
    assert set(state["optimizers"]) == {"autoencoder", "discriminator"}


def test_vqvae_sigkill_with_the_discriminator_active_resumes_exactly(tmp_path, demo_data_path):
    space = Workspace(tmp_path, demo_data_path)
    config = tiny_vqvae_config(max_epochs=2)
    config["model"]["disc_start"] = 0
    config["test"]["period"] = None
    # An iteration of this tiny model takes about 30 ms: with the 3 s default an epoch (9
    # iterations) could end, and its partial checkpoint be removed, before the kill landed.
    config["data"]["train_seconds_per_speaker"] = 12.0
    space.init("straight", config)
    space.init("killed", config)
    space.run("straight", "train")
    reference = logged_losses(space.experiment("straight"))
    second_epoch = [i for i, (epoch, _, _) in reference.items() if epoch == 2]
    assert len(second_epoch) > 8, "the test needs several iterations per epoch"
    assert all(d is not None for _, _, d in reference.values())

    assert max(second_epoch) - min(second_epoch) > 20, "the kill must land well inside the epoch"
    resumed = sigkill_at_iteration_then_resume(space, "killed", min(second_epoch) + 6, logged_losses)
    assert sorted(resumed) == sorted(reference)
    for iteration, (epoch, autoencoder, discriminator) in reference.items():
        assert resumed[iteration][0] == epoch
        assert abs(resumed[iteration][1] - autoencoder) <= 1e-6, (iteration, resumed[iteration], autoencoder)
        assert abs(resumed[iteration][2] - discriminator) <= 1e-6, (iteration, resumed[iteration], discriminator)
    indexes = [json.loads((space.experiment(n) / "checkpoints/index.json").read_text())
               for n in ("straight", "killed")]
    for epoch in ("1", "2"):
        assert abs(indexes[0]["epochs"][epoch]["validation_loss"]
                   - indexes[1]["epochs"][epoch]["validation_loss"]) <= 1e-6

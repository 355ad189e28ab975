"""HiFi-GAN on the real CLI and demo corpus: train and `test` (copy-synthesis beside the real
recording and Griffin-Lim of the same mel, judged with MCD, V/UV and the multi-resolution STFT
distance for both); SIGKILL in the middle of an epoch with both optimizers stepping resumes
exactly; MelNet, the VQ-VAE and the GPT prior (through its VQ-VAE's) render through the trained
vocoder with `vocoder` and `griffin_lim` rows."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from test_cli_cwgan_gp import logged_losses
from test_cli_gpt_prior import tiny_gpt_config
from test_cli_melnet import tiny_melnet_config
from test_cli_samplernn import Workspace, sigkill_at_iteration_then_resume
from test_cli_vqvae import tiny_vqvae_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_hifigan_config() -> dict:
    """16 mels, hop 160, window 640: the tiny MelNet and VQ-VAE configs' analysis."""
    config = json.loads((ROOT / "configs" / "hifigan.json").read_text())
    config["data"].update({"train_seconds_per_speaker": 2.0, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 1.0})
    config["model"].update({"n_mels": 16, "mpd_channels": [4, 8, 8, 16, 16],
                            "msd_channels": [4, 8, 16, 16, 16, 16, 16], "segment_frames": 8})
    config["training"].update({"batch_size": 8, "max_epochs": 2, "log_period": 1, "checkpoint_period": 4})
    config["test"].update({"period": 1, "utterances": 1, "max_seconds": 0.64})
    return config


@pytest.fixture(scope="module")
def vocoder_space(tmp_path_factory, demo_data_path):
    """A workspace holding the HiFi-GAN experiment "vocoder", trained two epochs and tested after
    each (training goes on after a test: its inference generator is apart from the trained one)."""
    space = Workspace(tmp_path_factory.mktemp("hifigan"), demo_data_path)
    space.init("vocoder", tiny_hifigan_config())
    space.run("vocoder", "train")
    return space


def test_copy_synthesis_is_judged_beside_griffin_lim(vocoder_space):
    root = vocoder_space.experiment("vocoder")
    assert (root / "results" / "epoch-1" / "metrics.json").is_file()
    results = root / "results" / "epoch-2"
    stems = {p.name.split(".")[0] for p in results.glob("*.wav")}
    assert len(stems) == 1
    stem = stems.pop()
    for row in ("", ".real", ".griffin_lim"):
        audio, rate = soundfile.read(results / f"{stem}{row}.wav")
        assert rate == 16000 and len(audio) == 64 * 160 and np.isfinite(audio).all()
    metrics = json.loads((results / "metrics.json").read_text())
    assert set(metrics["references"]) == {"real", "griffin_lim"}
    for figures in (metrics["mean"], metrics["references"]["griffin_lim"]["mean"]):
        assert 0 <= figures["vuv_error"] <= 1 and figures["mcd_db"] > 0
        assert figures["mrstft_distance"] > 0 and figures["mel_l1"] > 0
        assert 0 < figures["dnsmos_ovrl"] <= 5 and figures["wer"] is not None
    # Both players stepped on every batch; AdamW (0.8, 0.99) decayed by 0.999 per epoch.
    losses = logged_losses(root)
    assert losses and all(set(step) == {"discriminator_loss", "generator_loss"} for step in losses.values())
    state = torch.load(root / "checkpoints" / "2.checkpoint.pt", weights_only=True)
    for name in ("discriminator", "generator"):
        group = state["optimizers"][name]["param_groups"][0]
        assert group["betas"] == (0.8, 0.99) and group["lr"] == pytest.approx(2e-4 * 0.999 ** 2)
    index = json.loads((root / "checkpoints" / "index.json").read_text())
    assert 0 < index["epochs"]["2"]["validation_loss"] < 20         # mel L1 of natural-log mels
    assert "validation mel_l1" in (root / "verbose.log").read_text()


def test_sigkill_with_both_optimizers_active_resumes_exactly(vocoder_space):
    space = vocoder_space
    reference = logged_losses(space.experiment("vocoder"))
    first_epoch_end = torch.load(space.experiment("vocoder") / "checkpoints" / "1.checkpoint.pt",
                                 weights_only=True)["loop"]["iteration"]
    assert max(reference) - first_epoch_end >= 12, "the kill must land well inside epoch 2"
    config = tiny_hifigan_config()
    config["test"]["period"] = None
    space.init("killed", config)
    resumed = sigkill_at_iteration_then_resume(space, "killed", first_epoch_end + 6, logged_losses)
    assert sorted(resumed) == sorted(reference)
    for iteration, step in reference.items():
        for name, value in step.items():
            assert abs(resumed[iteration][name] - value) <= 1e-6, (iteration, name)
    indexes = [json.loads((space.experiment(n) / "checkpoints" / "index.json").read_text())
               for n in ("vocoder", "killed")]
    for epoch in ("1", "2"):
        assert abs(indexes[0]["epochs"][epoch]["validation_loss"]
                   - indexes[1]["epochs"][epoch]["validation_loss"]) <= 1e-6


def mel_family_config(family: str) -> dict:
    """A tiny config of the family naming the vocoder (the GPT prior: its VQ-VAE's), rendering
    one test utterance after every epoch."""
    if family == "gpt_prior":
        config = tiny_gpt_config("vqvae")
    else:
        config = tiny_melnet_config() if family == "melnet" else tiny_vqvae_config()
        config["model"]["vocoder_experiment"] = "vocoder"
    config["test"].update({"utterances": 1, "period": 1})
    return config


def rendered_through_the_vocoder(space: Workspace, family: str) -> list[Path]:
    """Trains the family one epoch; checks its `vocoder` row beside `griffin_lim`; its wavs."""
    space.init(family, mel_family_config(family))
    space.run(family, "train", "--max-epochs", "1")
    results = space.experiment(family) / "results" / "epoch-1"
    metrics = json.loads((results / "metrics.json").read_text())
    assert {"real", "griffin_lim", "vocoder"} <= set(metrics["references"])
    assert metrics["references"]["vocoder"]["mean"]["dnsmos_ovrl"] > 0
    vocoded = sorted(results.glob("*.vocoder.wav"))
    assert vocoded
    for path in vocoded:
        audio, _ = soundfile.read(path)
        baseline, _ = soundfile.read(str(path).replace(".vocoder.wav", ".griffin_lim.wav"))
        assert len(audio) == len(baseline) and not np.allclose(audio, baseline, atol=1e-3)
    assert "vocoder: HiFi-GAN experiment vocoder, epoch 2" in (space.experiment(family) / "verbose.log").read_text()
    return vocoded


def test_melnet_renders_through_the_named_vocoder(vocoder_space):
    rendered_through_the_vocoder(vocoder_space, "melnet")


def test_vqvae_and_its_gpt_prior_render_through_the_named_vocoder(vocoder_space):
    space = vocoder_space
    vocoded = rendered_through_the_vocoder(space, "vqvae")
    # The `vocoder` row is the epoch-2 generator on the original mel, undone from mels.npz's
    # [-1, 1] scaling by hand here (PCM_16 wav: 1 / 32768 steps).
    path = vocoded[0]
    utterance = path.name[:-len(".vocoder.wav")].replace("__", "/")
    with np.load(space.experiment("vqvae") / "mels.npz", allow_pickle=False) as mels:
        k = [str(i) for i in mels["ids"]].index(utterance)
        scaled = mels["mels"][:, mels["offsets"][k]:mels["offsets"][k + 1]].astype(np.float32)
        low, high = float(mels["scale_min"]), float(mels["scale_max"])
    audio, _ = soundfile.read(path)
    log_mel = (scaled[:, :len(audio) // 160] + 1) * 0.5 * (high - low) + low
    assert expected_vocoder_audio(space.experiment("vocoder"), log_mel) == pytest.approx(audio, abs=2e-4)
    rendered_through_the_vocoder(space, "gpt_prior")     # through its VQ-VAE's vocoder


def expected_vocoder_audio(experiment: Path, log_mel: np.ndarray) -> np.ndarray:
    """The experiment's epoch-2 generator, weight norm folded, on a natural-log mel."""
    from samplernn_pase.models.hifigan import HiFiGAN, HiFiGANConfig
    config = json.loads((experiment / "config.json").read_text())
    model = HiFiGAN(HiFiGANConfig.from_dict(config["model"]))
    model.load_state_dict(torch.load(experiment / "checkpoints" / "2.checkpoint.pt", weights_only=True)["model"])
    generator = model.generator.remove_weight_norm().eval()
    with torch.no_grad():
        return np.clip(generator(torch.from_numpy(log_mel)[None])[0, 0].numpy(), -1, 1)

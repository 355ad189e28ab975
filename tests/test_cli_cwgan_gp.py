"""Conditional WGAN-GP on the real CLI and demo corpus: init, train, test write per-label
wav files, an image grid and metrics.json; epoch 2 re-run from the epoch-1 checkpoint
repeats the first run's critic and generator losses; shape errors stop `init`."""

import json
import re
from pathlib import Path

import numpy as np
import soundfile
import torch

from test_cli_samplernn import Workspace, assert_speaker_tables_map_by_id

ROOT = Path(__file__).resolve().parents[1]
LOSSES_RE = re.compile(r"epoch \d+ iteration (\d+) (.*)$")


def tiny_cwgan_config() -> dict:
    config = json.loads((ROOT / "configs" / "cwgan_gp.json").read_text())
    config["data"].update({"train_seconds_per_speaker": 3.0, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 1.0})
    config["model"].update({"n_mels": 16, "frames": 16, "scales": 2, "noise_size": 8,
                            "label_embedding_size": 4, "generator_channels": 4, "critic_channels": 4,
                            "critic_features": 8, "samples_per_label": 2})
    config["training"].update({"batch_size": 4, "max_epochs": 2, "log_period": 1,
                               "learning_rate": 0.001})
    config["test"].update({"period": 2})
    return config


def logged_losses(experiment: Path) -> dict:
    """Iteration -> {optimizer loss name: value} from verbose.log."""
    losses = {}
    for line in (experiment / "verbose.log").read_text().splitlines():
        match = LOSSES_RE.search(line)
        if match:
            pairs = match.group(2).split()
            losses[int(match.group(1))] = {pairs[i]: float(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    return losses


def test_cwgan_gp_renders_every_label_and_resumes(tmp_path, demo_data_path):
    space = Workspace(tmp_path, demo_data_path)
    config = tiny_cwgan_config()
    space.init("gan", config)
    space.run("gan", "train")
    assert_speaker_tables_map_by_id(space, "gan", {"generator.label_embeddings.0.weight",
                                                   "critic.label_embeddings.0.weight"})
    root = space.experiment("gan")
    assert (root / "mels.npz").is_file()

    # Rendering at epoch 2: two samples for each of the six modeling speakers.
    index = json.loads((root / "data.json").read_text())
    modeling = [s["id"] for s in index["speakers"] if s["set"] == "modeling"]
    results = root / "results" / "epoch-2"
    wavs = sorted(p.name for p in results.glob("*.wav"))
    assert wavs == sorted(f"{speaker}-{i}.wav" for speaker in modeling for i in range(2))
    for wav in results.glob("*.wav"):
        audio, rate = soundfile.read(wav)
        assert rate == 16000 and len(audio) == 16 * 256
        assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-4
    assert (results / "grid.png").stat().st_size > 1000
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["labels"] == ["speaker", "gender"]
    assert np.isfinite(metrics["wasserstein_test"]) and metrics["test_crops"] > 0
    assert np.isfinite(metrics["mean"]["profile_l1_own"]) and np.isfinite(metrics["mean"]["profile_l1_others"])
    assert set(metrics["utterances"]) == {f"{speaker}-{i}" for speaker in modeling for i in range(2)}
    # Fréchet distances with their floor: on audio embeddings and on the model's own mels.
    for embedder in ("resemblyzer", "log_mel", "scaled_log_mel"):
        figures = metrics["frechet"][embedder]
        assert np.isfinite(figures["distance"]) and np.isfinite(figures["floor"]), embedder
        assert figures["generated"] == 12 and figures["real"] > 1
    assert -1 <= metrics["mean"]["speaker_similarity_own"] <= 1

    # Both optimizers stepped and are checkpointed; the generator every n_critic-th batch.
    losses = logged_losses(root)
    generator_steps = [i for i, step in losses.items() if "generator_loss" in step]
    assert all("critic_loss" in step for step in losses.values())
    assert generator_steps and all(i % 5 == 0 for i in generator_steps)
    state = torch.load(root / "checkpoints" / "2.checkpoint.pt", weights_only=True)
    assert set(state["optimizers"]) == {"critic", "generator"}
    assert state["ranks"][0]["runner"]["critic_steps"] == max(losses)
    assert state["optimizers"]["critic"]["param_groups"][0]["betas"] == (0.5, 0.9)

    # Epoch 2 again from the epoch-1 checkpoint, in a new process: the same losses.
    space.run("gan", "train", "--epoch", "1")
    resumed = logged_losses(root)
    assert sorted(resumed) == sorted(losses)
    first_epoch_end = torch.load(root / "checkpoints" / "1.checkpoint.pt",
                                 weights_only=True)["loop"]["iteration"]
    log = (root / "verbose.log").read_text()
    assert log.count(f" iteration {first_epoch_end + 1} ") == 2     # epoch 2 did run again
    assert log.count(f" iteration {first_epoch_end} ") == 1
    for iteration, step in losses.items():
        assert resumed[iteration].keys() == step.keys()
        for name, value in step.items():
            assert abs(resumed[iteration][name] - value) <= 1e-6, (iteration, name)


def test_cwgan_gp_init_rejects_crops_the_network_cannot_make(tmp_path, demo_data_path):
    space = Workspace(tmp_path, demo_data_path)
    config = tiny_cwgan_config()
    config["model"].update({"generator": "strips", "strips": 3})
    path = _write(tmp_path, config)
    result = space.run("bad", "init", "--config-path", str(path), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [   # a config error at init names the config file
        f"error: {path}: model.frames: 16 is not a multiple of 2 ** scales * strips = 12"]
    assert not space.experiment("bad").exists()


def _write(folder: Path, config: dict) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path

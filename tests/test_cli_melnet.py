"""MelNet on the real CLI and demo corpus: train, render wav + per-tier PNGs, train one tier."""

import json
from pathlib import Path

import numpy as np
import soundfile
import torch

from browser import broken_media, load_page
from test_cli_samplernn import Workspace

ROOT = Path(__file__).resolve().parents[1]


def tiny_melnet_config() -> dict:
    config = json.loads((ROOT / "configs" / "melnet.json").read_text())
    config["data"].update({"train_seconds_per_speaker": 3.0, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 1.0})
    config["model"].update({"n_mels": 16, "tiers": 3, "layers": [1, 1, 1], "hidden_size": 8,
                            "gmm_components": 2, "chunk_frames": 16})
    config["training"].update({"batch_size": 4, "max_epochs": 1, "log_period": 1})
    config["test"].update({"utterances": 2, "max_seconds": 0.32})
    return config


def test_melnet_trains_renders_and_trains_one_tier(tmp_path, demo_data_path):
    space = Workspace(tmp_path, demo_data_path)
    space.init("melnet", tiny_melnet_config())
    space.run("melnet", "train")
    root = space.experiment("melnet")
    results = root / "results" / "epoch-1"
    wavs = sorted(results.glob("*.wav"))
    pngs = sorted(results.glob("*.png"))
    assert len(wavs) == 4 and len(pngs) == 4       # 2 upsampled test utterances + 2 full samples
    assert sum(w.name.startswith("sample-") for w in wavs) == 2
    for wav in wavs:
        audio, rate = soundfile.read(wav)
        assert rate == 16000 and len(audio) >= 0.3 * 16000
        assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-4
    metrics = json.loads((results / "metrics.json").read_text())
    assert np.isfinite(metrics["mean"]["nll"]) and "nll_tier3" in metrics["mean"]
    # The report (written by train after its test): each upsampled utterance beside its recording.
    page = (root / "report.html").read_text()
    for wav in wavs:
        assert f'src="results/epoch-1/{wav.name}"' in page
        if wav.name.endswith(".upsampled.wav"):
            assert f'src="report/recordings/{wav.name.removesuffix(".upsampled.wav")}.wav"' in page
    found = load_page(root / "report.html")
    if found is not None:
        assert broken_media(found) == [] and "loss-plot" in [i["id"] for i in found["images"]]
        assert len(found["audios"]) == 6                # 4 renderings + 2 recordings

    before = torch.load(root / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    space.run("melnet", "train", "--tier", "2", "--max-epochs", "2")
    after = torch.load(root / "checkpoints" / "2.checkpoint.pt", weights_only=True)["model"]
    changed = {name.split(".")[1] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"1"}                         # tiers.1 is tier 2: the only one trained

    bad = space.run("melnet", "train", "--tier", "7", "--max-epochs", "3", check=False)
    assert bad.returncode == 2 and "--tier 7" in bad.stderr

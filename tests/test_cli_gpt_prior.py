"""GPT prior on the real CLI and demo corpus, on top of a tiny VQ-VAE experiment:
init encodes the corpus into codes.npz, train, test renders continuations and per-speaker
samples (wav + PNG) and metrics.json."""

import json
import math
from pathlib import Path

import numpy as np
import soundfile

from test_cli_samplernn import Workspace, assert_speaker_tables_map_by_id

ROOT = Path(__file__).resolve().parents[1]
SECONDS = {"train_seconds_per_speaker": 4.0, "validation_seconds_per_speaker": 1.0,
           "test_seconds_per_speaker": 2.0}


def tiny_vqvae_config() -> dict:
    config = json.loads((ROOT / "configs" / "vqvae.json").read_text())
    config["data"].update(SECONDS)
    config["model"].update({"n_mels": 32, "crop_frames": 32, "channels": 8,
                            "channel_multipliers": [1, 1, 1, 1, 1], "codebook_size": 16,
                            "codebook_dim": 8, "disc_start": 100000, "disc_channels": 8,
                            "disc_layers": 2})
    config["training"].update({"batch_size": 4, "max_epochs": 1})
    config["test"].update({"period": None})
    return config


def tiny_gpt_config(vqvae_experiment: str) -> dict:
    config = json.loads((ROOT / "configs" / "gpt_prior.json").read_text())
    config["data"].update(SECONDS)
    config["model"].update({"vqvae_experiment": vqvae_experiment, "block_size": 16, "n_layer": 1,
                            "n_head": 2, "n_embd": 16})
    config["training"].update({"batch_size": 8, "max_epochs": 1})
    config["test"].update({"period": None, "utterances": 2, "max_seconds": 0.96})
    return config


def test_gpt_prior_on_a_vqvae_experiment(tmp_path, demo_data_path):
    space = Workspace(tmp_path, demo_data_path)

    path = tmp_path / "orphan.json"
    path.write_text(json.dumps(tiny_gpt_config("no_such_vqvae")))
    bad = space.run("orphan", "init", "--config-path", str(path), check=False)
    assert bad.returncode == 2 and "model.vqvae_experiment" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not space.experiment("orphan").exists()

    space.init("vq", tiny_vqvae_config())
    space.run("vq", "train")
    config = tiny_gpt_config("vq")
    config["model"]["vqvae_epoch"] = 7
    path.write_text(json.dumps(config))
    bad = space.run("orphan", "init", "--config-path", str(path), check=False)
    assert bad.returncode == 2 and "model.vqvae_experiment: vq has no checkpoint of epoch 7" in bad.stderr
    config["model"]["vqvae_epoch"] = "best"
    space.init("prior", config)
    prior = space.experiment("prior")

    # codes.npz: a grid per utterance of data.json, one column per 16 frames of the VQ-VAE's mels.
    index = json.loads((prior / "data.json").read_text())
    with np.load(prior / "codes.npz", allow_pickle=False) as codes, \
            np.load(space.experiment("vq") / "mels.npz", allow_pickle=False) as mels:
        assert sorted(codes["ids"]) == sorted(u["id"] for u in index["utterances"])
        assert codes["codes"].shape[0] == 32 // 16 and int(codes["vqvae_epoch"]) == 1
        assert 0 <= codes["codes"].min() and codes["codes"].max() < 16
        frames = dict(zip(mels["ids"], np.diff(mels["offsets"])))
        for utterance_id, (height, width) in zip(codes["ids"], codes["grid_shapes"]):
            assert (height, width) == (2, frames[utterance_id] // 16)

    space.run("prior", "train")
    assert_speaker_tables_map_by_id(space, "prior", {"condition_embedding.weight"})
    space.run("prior", "test")
    results = prior / "results" / "epoch-1"
    modeling = [s["id"] for s in index["speakers"] if s["set"] == "modeling"]
    every_wav = sorted(p.name for p in results.glob("*.wav"))
    wavs = [w for w in every_wav if not w.endswith(".real.wav")]
    assert sum(w.endswith(".continuation.real.wav") for w in every_wav) == 2   # the recordings beside
    assert sum(w.endswith(".continuation.wav") for w in wavs) == 2
    assert sorted(w for w in wavs if w.startswith("sample-")) == sorted(f"sample-{s}-0.wav" for s in modeling)
    assert sorted(p.stem for p in results.glob("*.png")) == sorted(w[:-4] for w in wavs)
    for wav in wavs:
        audio, rate = soundfile.read(results / wav)
        assert rate == 16000 and len(audio) == 6 * 16 * 160       # 6 columns of 16 hops of 160
        assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-4
    metrics = json.loads((results / "metrics.json").read_text())
    nll = metrics["mean"]["test_nll_bits_per_code"]
    assert metrics["mean"]["test_codes"] > 0 and 0 < nll < 2 * math.log2(16)
    for utterance in (k for k in metrics["utterances"] if k.endswith(".continuation")):
        assert metrics["utterances"][utterance]["prompt_columns"] == 3

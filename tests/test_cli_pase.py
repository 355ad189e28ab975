"""PASE on the real CLI: train the encoder, seed a SampleRNN experiment with it,
and render adaptation speakers that SampleRNN never trained on."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from browser import broken_media, load_page
from test_cli_samplernn import Workspace, tiny_config

ROOT = Path(__file__).resolve().parents[1]
# The tiny encoder's epochs. On the (deterministic) demo corpus the held-out utterances are nearest
# their own speaker's seed in 4 / 5 / 6 / 5 of 17 after 3 / 4 / 5 / 6 epochs (chance 2.1 of 17),
# own against other cosine 0.999 / 0.998 after 3, 0.96 / 0.83 after 5.
PASE_EPOCHS = 5


def tiny_pase_config() -> dict:
    config = json.loads((ROOT / "configs" / "pase.json").read_text())
    config["data"].update({"train_seconds_per_speaker": 3.0, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 2.0})
    config["model"].update({"chunk_seconds": 0.5, "embedding_dim": 16, "sinc_channels": 8,
                            "sinc_kernel": 101, "conv_channels": [8, 16, 16, 16, 16, 16, 16],
                            "worker_hidden": 16, "seed_seconds": 1.0})
    config["training"].update({"batch_size": 4, "max_epochs": PASE_EPOCHS, "log_period": 1})
    return config


@pytest.fixture(scope="module")
def pase_workspace(tmp_path_factory, demo_data_path):
    space = Workspace(tmp_path_factory.mktemp("pase"), demo_data_path)
    space.init("pase", tiny_pase_config())
    space.run("pase", "train")
    return space


def test_pase_trains_and_tests(pase_workspace):
    root = pase_workspace.experiment("pase")
    assert (root / "checkpoints" / f"{PASE_EPOCHS}.checkpoint.pt").is_file()
    metrics = json.loads((root / "results" / f"epoch-{PASE_EPOCHS}" / "metrics.json").read_text())
    mean = metrics["mean"]
    assert np.isfinite(mean["validation_pase_loss"])
    assert -1 <= mean["other_speaker_similarity"] <= 1 and -1 <= mean["same_speaker_similarity"] <= 1
    assert len(metrics["speakers"]) == 8
    assert (root / "results" / f"epoch-{PASE_EPOCHS}" / "speaker_similarity.png").is_file()
    page = (root / "report.html").read_text()        # written by train after its test
    assert f'src="results/epoch-{PASE_EPOCHS}/speaker_similarity.png"' in page
    found = load_page(root / "report.html")
    if found is not None:
        assert broken_media(found) == [] and "loss-plot" in [i["id"] for i in found["images"]]


def test_pase_seeds_identify_held_out_speakers(pase_workspace):
    """The `test` that `train` ran: every validation and test utterance, embedded alone by the
    trained encoder, is nearest to its own speaker's seed (from the train split, as `init` makes
    seeds for SampleRNN) far more often than chance, and closer to it than to the others."""
    root = pase_workspace.experiment("pase")
    metrics = json.loads((root / "results" / f"epoch-{PASE_EPOCHS}" / "metrics.json").read_text())
    identification = metrics["utterance_identification"]
    index = json.loads((root / "data.json").read_text())
    held_out = [u for u in index["utterances"] if u["split"] in ("validation", "test")]
    assert identification["speakers"] == 8 and identification["probes"] == len(held_out) >= 16
    assert identification["chance"] == 1 / 8
    assert identification["accuracy"] >= 2 * identification["chance"]
    assert identification["own_cosine"] > identification["other_cosine"]
    assert metrics["mean"]["utterance_identification_accuracy"] == identification["accuracy"]


def test_samplernn_with_pase_speakers_renders_adaptation_speakers(pase_workspace):
    space = pase_workspace
    config = tiny_config(max_epochs=1)
    config["model"].update({"conds_speaker_type": "pase", "pase_experiment": "pase",
                            "pase_seed_seconds": 1.0})
    config["test"]["period"] = None
    space.init("voiced", config)
    root = space.experiment("voiced")
    index = json.loads((root / "data.json").read_text())
    with np.load(root / "speaker_seeds.npz", allow_pickle=False) as seeds:
        assert seeds["seeds"].shape == (len(index["speakers"]), 16)
        assert list(seeds["speakers"]) == [s["id"] for s in sorted(index["speakers"],
                                                                    key=lambda s: s["index"])]
        assert np.all(np.isfinite(seeds["seeds"]))
    space.run("voiced", "train")
    space.run("voiced", "test", "--speakers", "adaptation")
    results = root / "results" / "epoch-1" / "adaptation"
    metrics = json.loads((results / "metrics.json").read_text())
    adaptation = {s["id"] for s in index["speakers"] if s["set"] == "adaptation"}
    speaker_of = {u["id"]: u["speaker"] for u in index["utterances"]}
    assert metrics["utterances"] and all(speaker_of[u] in adaptation for u in metrics["utterances"])
    assert all(-1 <= m["speaker_similarity"] <= 1 for m in metrics["utterances"].values())
    assert metrics["speaker_set"] == "adaptation"
    assert all(-1 <= m["speaker_similarity_own"] <= 1 for m in metrics["utterances"].values())
    assert "pase" in metrics["frechet"] and metrics["frechet"]["pase"]["generated"] == len(wavs_of(results))
    wavs = wavs_of(results)
    assert len(wavs) == len(metrics["utterances"])
    for wav in wavs:
        audio, rate = soundfile.read(wav)
        assert rate == 16000 and np.sqrt(np.mean(audio ** 2)) > 1e-3


def wavs_of(results):
    """The generated wavs of a results folder (not the .real / .world references beside them)."""
    return sorted(w for w in results.glob("*.wav") if not w.name.endswith((".real.wav", ".world.wav")))


def test_missing_pase_experiment_is_one_line(pase_workspace):
    config = tiny_config()
    config["model"].update({"conds_speaker_type": "pase", "pase_experiment": "nowhere"})
    path = pase_workspace.root / "nowhere.json"
    path.write_text(json.dumps(config))
    result = pase_workspace.run("x", "init", "--config-path", str(path), check=False)
    assert result.returncode == 2 and "model.pase_experiment" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not pase_workspace.experiment("x").exists()


def test_acoustic_model_with_pase_speakers_says_adaptation_speakers(pase_workspace):
    """The text-to-speech front half on PASE seeds (issue 24): `init` writes every speaker's
    seed from the PASE experiment, `train` trains on the modeling speakers, and `test` renders
    the adaptation speakers it never trained on, with their own seeds and, with
    `speaker_statistics`, their feature statistics on the modeling speakers' scale."""
    import torch

    from test_cli_acoustic import tiny_acoustic_config
    space = pase_workspace
    config = tiny_acoustic_config(max_epochs=1)
    config["model"].update({"conds_speaker_type": "pase", "pase_experiment": "pase", "pase_seed_seconds": 1.0,
                            "vocoder_experiment": None, "global_variance": False, "speaker_output": False,
                            "speaker_statistics": True})
    space.init("spoken", config)
    root = space.experiment("spoken")
    index = json.loads((root / "data.json").read_text())
    with np.load(root / "speaker_seeds.npz", allow_pickle=False) as seeds:
        assert seeds["seeds"].shape == (len(index["speakers"]), 16) and np.all(np.isfinite(seeds["seeds"]))
        assert list(seeds["speakers"]) == [s["id"] for s in sorted(index["speakers"], key=lambda s: s["index"])]
        assert len(np.unique(seeds["seeds"].round(5), axis=0)) == len(index["speakers"])
    space.run("spoken", "train")
    # The statistics are centered and scaled over the modeling speakers, as init's
    # normalization file gives them; the checkpoint keeps that scale.
    with np.load(root / "normalization.npz") as normalization:
        statistics = np.concatenate([normalization["acoustic_mean"], normalization["acoustic_std"]], axis=1)
    modeling = [s["index"] for s in index["speakers"] if s["set"] == "modeling"]
    weights = torch.load(root / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    center = weights["statistics_center"].numpy()
    np.testing.assert_allclose(center, statistics[modeling].mean(axis=0), rtol=1e-5, atol=1e-5)
    spread = statistics[modeling].std(axis=0)
    np.testing.assert_allclose(weights["statistics_scale"].numpy(), np.where(spread > 1e-6, spread, 1.0), rtol=1e-4)
    assert weights["speaker.weight"].shape[1] == 16 + statistics.shape[1]
    space.run("spoken", "test", "--speakers", "adaptation")
    metrics = json.loads((root / "results" / "epoch-1" / "adaptation" / "metrics.json").read_text())
    adaptation = {s["id"] for s in index["speakers"] if s["set"] == "adaptation"}
    speaker_of = {u["id"]: u["speaker"] for u in index["utterances"]}
    assert metrics["utterances"] and {speaker_of[u] for u in metrics["utterances"]} <= adaptation
    assert all(np.isfinite(m["oracle_mcd_db"]) and np.isfinite(m["duration_rmse_frames"])
               for m in metrics["utterances"].values())


def test_pase_trains_on_the_modeling_speakers_only(pase_workspace):
    """The encoder must make seeds of voices it has not heard: no chunk of an adaptation
    speaker's audio is in its training or validation batches."""
    import argparse

    import torch

    from samplernn_pase import cli
    from samplernn_pase.experiment.folder import Experiment
    experiment = Experiment(pase_workspace.root / "experiments", "pase")
    runner = cli.trained_runner(argparse.Namespace(data_path=pase_workspace.data_path), experiment, 3,
                                torch.device("cpu"))
    index = experiment.data_index()
    set_of = {s["id"]: s["set"] for s in index["speakers"]}
    speaker_of = {u["id"]: u["speaker"] for u in index["utterances"]}
    assert "adaptation" in set_of.values()
    for split in ("train", "validation"):
        chunks = [chunk for batch in runner.loader(split, 1, shuffle=True).batches for chunk in batch]
        speakers = {speaker_of[utterance] for utterance, _ in chunks}
        assert chunks and {set_of[s] for s in speakers} == {"modeling"}, (split, speakers)

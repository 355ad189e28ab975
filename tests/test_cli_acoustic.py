"""The acoustic family on the real CLI and demo corpus: init refuses a vocoder that cannot render
its features, training resumes exactly after a SIGKILL mid-epoch, and `synthesize --text` from a
release alone speaks with the predicted durations, not eSpeak NG's; the Python API renders the samples
`synthesize --seed` writes."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import torch

from test_cli_samplernn import Workspace, assert_speaker_tables_map_by_id, tiny_config
from test_resume import assert_same_run, losses


def tiny_acoustic_config(**training) -> dict:
    config = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "configs", "acoustic.json")).read())
    config["data"].update({"train_seconds_per_speaker": 4.0, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 1.0})
    # the options off by default ride along: resumed exactly, carried by the release
    config["model"].update({"hidden_size": 16, "duration_hidden_size": 8, "rnn_layers": 1,
                            "vocoder_experiment": "vocoder", "trajectory_points": 3, "global_variance": True,
                            "speaker_output": True, "speaker_echo": True})
    config["training"].update({"batch_size": 1, "max_epochs": 2, "log_period": 1, "checkpoint_period": 2,
                               **training})
    config["test"].update({"period": None, "utterances": 1, "max_seconds": 0.2})
    return config


@pytest.fixture(scope="module")
def space(tmp_path_factory, demo_data_path):
    """A workspace with a one-epoch tiny SampleRNN vocoder on acoustic conditioning."""
    space = Workspace(tmp_path_factory.mktemp("acoustic"), demo_data_path)
    vocoder = tiny_config(max_epochs=1)
    vocoder["data"].update({"train_seconds_per_speaker": 0.5, "validation_seconds_per_speaker": 0.5})
    vocoder["test"]["period"] = None
    space.init("vocoder", vocoder)
    space.run("vocoder", "train")
    return space


def test_init_refuses_a_vocoder_that_cannot_render_the_features(space):
    config = tiny_acoustic_config()
    for name, expected in (("missing", "no such experiment"), ("linguistic", "not \"acoustic\"")):
        if name == "linguistic":
            other = tiny_config(max_epochs=1)
            other["model"].update({"conditioning": "linguistic", "lpc_order": 0, "harmonic_source": False})
            space.init("linguistic", other)
        config["model"]["vocoder_experiment"] = name
        result = space.run(f"refused-{name}", "init", "--config-path",
                           str(write(space, f"refused-{name}", config)), check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "model.vocoder_experiment" in lines[0] \
            and expected in lines[0], lines
        assert not space.experiment(f"refused-{name}").exists()


def write(space, name, config):
    path = space.root / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def test_sigkill_mid_epoch_resumes_exactly(space):
    config = tiny_acoustic_config()
    space.init("straight", config)
    space.init("killed", config)
    space.run("straight", "train")
    straight, killed = space.experiment("straight"), space.experiment("killed")
    assert_speaker_tables_map_by_id(space, "straight", {"speaker.weight", "utterance_variance",
                                                        "frame_decoder.symbol_table.weight",
                                                        "frame_decoder.speaker_output", "speaker_echo"})
    second_epoch = sorted(i for i, (epoch, _) in losses(straight).items() if epoch == 2)
    assert len(second_epoch) >= 6, "the test needs several iterations per epoch"
    process = subprocess.Popen(space.command("killed", "train"), cwd=space.root, env=space.env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while max(losses(killed) if (killed / "verbose.log").exists() else {}, default=0) < second_epoch[2]:
            assert process.poll() is None, "train ended before the kill"
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    partial = torch.load(killed / "checkpoints" / "partial.checkpoint.pt", weights_only=True)
    assert partial["loop"]["epoch"] == 2 and not partial["loop"]["epoch_complete"]
    space.run("killed", "train")
    assert_same_run(killed, straight)


def test_init_from_starts_a_new_speaker_from_its_own_phone_means(space):
    """`init --init-from` on the acoustic family: the source's adaptation speakers, made modeling
    speakers here, start the per-symbol table from their own mean features per phone symbol
    (computed below with NumPy from their training frames), as a new experiment starts every
    speaker, and their embedding from the mean of the source's trained speakers'; the trained
    speakers keep the source's rows. (Given the source's mean per-symbol rows instead, the demo's
    new speakers were identified by Resemblyzer in 0 of 5 test utterances, README.)"""
    from samplernn_pase.data.store import UtteranceStore
    from samplernn_pase.data.phone_sequences import PHONE_COLUMN
    space.init("adapt-source", tiny_acoustic_config(max_epochs=1))
    space.run("adapt-source", "train")
    target = tiny_acoustic_config(max_epochs=1)
    target["data"].update({"modeling_speakers": {"f": 4, "m": 4}, "adaptation_speakers": None})
    target["model"]["vocoder_experiment"] = None
    space.run("adapted", "init", "--config-path", str(write(space, "adapted", target)),
              "--init-from", "adapt-source")
    root, source_root = space.experiment("adapted"), space.experiment("adapt-source")
    initial = torch.load(root / "initial_weights.pt", weights_only=True)["model"]
    source = torch.load(source_root / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    index = json.loads((root / "data.json").read_text())
    was = {s["id"]: s for s in json.loads((source_root / "data.json").read_text())["speakers"]}
    table = initial["frame_decoder.symbol_table.weight"]
    phones = table.shape[0] // len(index["speakers"])
    store = UtteranceStore(index, dict(np.load(root / "normalization.npz")), space.data_path)
    trained = [was[i]["index"] for i in was if was[i]["set"] == "modeling"]
    new = 0
    for speaker in index["speakers"]:
        rows = table[speaker["index"] * phones:(speaker["index"] + 1) * phones]
        before = was[speaker["id"]]
        if before["set"] == "modeling":
            start = before["index"] * phones
            assert torch.equal(rows, source["frame_decoder.symbol_table.weight"][start:start + phones])
            assert torch.equal(initial["speaker.weight"][speaker["index"]], source["speaker.weight"][before["index"]])
            continue
        new += 1
        frames = {}
        for utterance_id in store.ids(split="train", speaker_set="modeling"):
            utterance = store.load(utterance_id)
            if utterance.speaker_index == speaker["index"]:
                symbols = utterance.phone_categorical[:, PHONE_COLUMN][utterance.phone_index]
                for symbol in np.unique(symbols):
                    frames.setdefault(int(symbol), []).append(utterance.acoustic[symbols == symbol])
        assert len(frames) >= 10
        for symbol, chunks in frames.items():
            np.testing.assert_allclose(rows[symbol].numpy(), np.concatenate(chunks).mean(axis=0),
                                       rtol=1e-4, atol=1e-5)
        mean = source["speaker.weight"][trained].mean(0)
        assert torch.allclose(initial["speaker.weight"][speaker["index"]], mean, atol=1e-6)
    assert new == 2


def test_synthesize_text_from_a_release_follows_the_predicted_durations(space, tmp_path):
    from samplernn_pase.data.demo_corpus import read_text
    from samplernn_pase.data.hts_labels import read_labels

    if not (space.experiment("straight") / "checkpoints" / "2.checkpoint.pt").is_file():
        space.init("straight", tiny_acoustic_config())
        space.run("straight", "train")
    space.run("straight", "create_release", "--epoch", "2")
    release = space.experiment("straight") / "checkpoints" / "2.checkpoint.release.pt"
    text, speaker = "Hello there.", "demo_f1"
    out = tmp_path / "out"
    # The release alone: another folder, no experiments/ beside it.
    result = subprocess.run([sys.executable, "-m", "samplernn_pase", "synthesize", "--release", str(release),
                             "--text", text, "--speaker", speaker, "--output-dir", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, env=space.env())
    assert result.returncode == 0, result.stderr[-3000:]
    wav = result.stdout.strip().splitlines()[-1].removeprefix("wav: ")
    audio, rate = soundfile.read(wav)
    assert rate == 16000 and np.all(np.isfinite(audio))
    figures = next(iter(json.loads((out / "metrics.json").read_text())["utterances"].values()))
    assert len(audio) == figures["predicted_frames"] * 80
    # eSpeak NG's own reading of the text: its labels' timing is not the rendering's.
    espeak = read_text(text, "f1", 16000, tmp_path / "espeak")
    labels = read_labels(espeak.with_suffix(".lab"))
    espeak_frames = round(labels.duration * 16000 / 80)
    assert abs(figures["label_frames"] - espeak_frames) <= 1
    assert abs(figures["predicted_frames"] - espeak_frames) >= 3
    # the SampleRNN experiment can no longer be asked for text-to-speech, only to re-vocode eSpeak
    refused = space.run("vocoder", "synthesize", "--text", text, "--speaker", speaker, check=False)
    assert refused.returncode == 2 and "--espeak-text" in refused.stderr


def pcm16(audio: np.ndarray, rate: int) -> np.ndarray:
    """The 16-bit samples a wav of `audio` holds (soundfile's conversion, as `synthesize` writes)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, subtype="PCM_16", format="WAV")
    buffer.seek(0)
    return soundfile.read(buffer, dtype="int16")[0]


def files_of(folder) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_python_api_renders_the_samples_synthesize_writes(space, tmp_path, one_thread):
    """`load(release)` renders a test utterance and new text with the command's code: the same
    16-bit samples as `synthesize --seed` writes, and nothing written anywhere."""
    from samplernn_pase import load
    from samplernn_pase.errors import UserError

    straight = space.experiment("straight")
    if not (straight / "checkpoints" / "2.checkpoint.pt").is_file():
        space.init("straight", tiny_acoustic_config())
        space.run("straight", "train")
    release = straight / "checkpoints" / "2.checkpoint.release.pt"
    if not release.is_file():
        space.run("straight", "create_release", "--epoch", "2")
    before = files_of(space.root)
    voice = load(release)
    modeling = [s["id"] for s in json.loads((straight / "data.json").read_text())["speakers"]
                if s["set"] == "modeling"]
    assert voice.sample_rate == 16000 and set(modeling) <= set(voice.speakers) and voice.utterances
    utterance, text, speaker = voice.utterances[0], "Hi there.", "demo_f1"
    api = {"utterance": voice.synthesize(utterance=utterance, seed=7),
           "text": voice.synthesize(text=text, speaker=speaker, seed=7)}
    for audio, rate in api.values():
        assert audio.dtype == np.float32 and rate == 16000 and len(audio) > 1000 and np.abs(audio).max() <= 1
    # Again after other calls: the same samples; another seed: others; no seed: the experiment's.
    assert np.array_equal(voice.synthesize(text=text, speaker=speaker, seed=7)[0], api["text"][0])
    assert not np.array_equal(voice.synthesize(text=text, speaker=speaker, seed=8)[0], api["text"][0])
    seed = json.loads((straight / "config.json").read_text())["seed"]
    assert np.array_equal(voice.synthesize(utterance=utterance)[0],
                          voice.synthesize(utterance=utterance, seed=seed)[0])
    assert files_of(space.root) == before and not any(tmp_path.iterdir())     # nothing written
    # An experiment folder renders as its release does.
    folder = load(straight, epoch=2, data_path=space.data_path)
    assert np.array_equal(folder.synthesize(utterance=utterance, seed=7)[0], api["utterance"][0])
    with pytest.raises(UserError, match="espeak_text="):
        load(space.experiment("vocoder"), data_path=space.data_path).synthesize(text=text, speaker=speaker)
    for kind, given in (("utterance", ["--utterance", utterance]), ("text", ["--text", text, "--speaker", speaker])):
        result = subprocess.run([sys.executable, "-m", "samplernn_pase", "synthesize", "--release", str(release),
                                 *given, "--seed", "7", "--output-dir", str(tmp_path / kind)],
                                cwd=tmp_path, capture_output=True, text=True, env=space.env())
        assert result.returncode == 0, result.stderr[-3000:]
        written, rate = soundfile.read(result.stdout.strip().splitlines()[-1].removeprefix("wav: "), dtype="int16")
        assert rate == 16000 and np.array_equal(written, pcm16(*api[kind])), kind

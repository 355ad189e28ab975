"""The real CLI on the real demo corpus: init, info, train, kill and resume, test (torchrun: test_resume.py).

One small SampleRNN config (tiny widths, a few seconds of training audio per
speaker) keeps every command in seconds on a 2-core CPU; the code path is the
one `make demo` runs.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
LOSS_RE = re.compile(r"epoch (\d+) iteration (\d+) nll_bits (\S+)")


def tiny_config(**training) -> dict:
    config = json.loads((ROOT / "config.default.json").read_text())
    config["model"].update({"rnn_hidden_size": 24, "embedding_size": 8, "mlp_layers": 1,
                            "conds_size": 8, "speaker_embedding_size": 4,
                            "linguistic_embedding_size": 3})
    config["data"].update({"train_seconds_per_speaker": 1.5, "validation_seconds_per_speaker": 1.0,
                           "test_seconds_per_speaker": 1.0})
    config["training"].update({"batch_size": 3, "sequence_length": 4, "max_epochs": 2,
                               "log_period": 1, "checkpoint_period": 4, **training})
    config["test"].update({"utterances": 2, "max_seconds": 0.1, "period": 1})
    return config


class Workspace:
    """A folder with data/ and experiments/ where the CLI runs as a user would run it."""

    def __init__(self, root: Path, data_path: Path):
        self.root = root
        self.data_path = data_path     # shared with the data tests: corpus and feature cache

    def command(self, name, *args):
        return [sys.executable, "-m", "samplernn_pase", "--experiment-name", name,
                "--data-path", str(self.data_path), *args]

    def run(self, name, *args, timeout=900, check=True):
        result = subprocess.run(self.command(name, *args), cwd=self.root, capture_output=True,
                                text=True, timeout=timeout, env=self.env())
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def env(self):
        return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def init(self, name, config):
        path = self.root / f"{name}.json"
        path.write_text(json.dumps(config))
        return self.run(name, "init", "--config-path", str(path))

    def experiment(self, name) -> Path:
        return self.root / "experiments" / name


def logged_losses(experiment: Path, with_epochs: bool = False) -> dict:
    """Iteration -> training loss (or (epoch, loss)) from verbose.log; a re-run
    iteration keeps its last value."""
    losses = {}
    for line in (experiment / "verbose.log").read_text().splitlines():
        match = LOSS_RE.search(line)
        if match:
            loss = float(match.group(3))
            losses[int(match.group(2))] = (int(match.group(1)), loss) if with_epochs else loss
    return losses


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, demo_data_path):
    space = Workspace(tmp_path_factory.mktemp("cli"), demo_data_path)
    space.init("base", tiny_config())
    return space


def test_init_writes_the_experiment_and_info_summarizes_it(workspace):
    root = workspace.experiment("base")
    config = json.loads((root / "config.json").read_text())
    assert config["model"]["rnn_hidden_size"] == 24
    assert config["training"]["scheduler"]["type"] == "plateau"   # defaults filled in
    assert config["package_version"]
    index = json.loads((root / "data.json").read_text())
    assert {u["split"] for u in index["utterances"]} == {"train", "validation", "test"}
    with np.load(root / "normalization.npz", allow_pickle=False) as npz:
        assert npz["acoustic_mean"].shape[0] == len(index["speakers"])
    info = workspace.run("base", "info").stdout
    assert "modeling speakers" in info and "train:" in info and "checkpoints: none" in info
    again = workspace.run("base", "init", "--config-path", str(workspace.root / "base.json"),
                          check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_init_set_overrides_the_config_file_in_the_snapshot(workspace):
    """`init --set`: the snapshot holds the overridden values (the file keeps its own), and the
    model `train` builds from it has them."""
    config_path = workspace.root / "overridden.json"
    config_path.write_text(json.dumps(tiny_config()))
    workspace.run("overridden", "init", "--config-path", str(config_path),
                  "--set", "model.rnn_hidden_size=128", "--set", "training.batch_size=4")
    snapshot = json.loads((workspace.experiment("overridden") / "config.json").read_text())
    assert snapshot["model"]["rnn_hidden_size"] == 128 and snapshot["training"]["batch_size"] == 4
    assert snapshot["model"]["embedding_size"] == 8                     # the file's other values
    assert json.loads(config_path.read_text())["model"]["rnn_hidden_size"] == 24
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.models.samplernn import SampleRNN, SampleRNNConfig
    model = SampleRNN(SampleRNNConfig.from_dict(
        Experiment(workspace.root / "experiments", "overridden").config()["model"]))
    assert {p.shape[-1] for n, p in model.named_parameters() if "weight_hh" in n} == {128}


def test_unknown_device_is_one_line(workspace):
    result = workspace.run("base", "train", "--device", "tpu", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --device: unknown device 'tpu' "
                                                  "(use cpu, cuda or cuda:K)"]


def test_train_renders_audio_metrics_and_release(workspace):
    workspace.init("trained", tiny_config(max_epochs=1))
    workspace.run("trained", "train", "--device", "cpu")
    root = workspace.experiment("trained")
    assert (root / "checkpoints" / "1.checkpoint.pt").is_file()
    assert not (root / "train.lock").exists()
    results = root / "results" / "epoch-1"
    wavs = sorted(results.glob("*.wav"))
    generated = [w for w in wavs if not w.name.endswith((".real.wav", ".world.wav"))]
    assert len(generated) == 2 and len(list(results.glob("*.png"))) == 2
    for wav in generated:       # beside each: the real recording and its WORLD resynthesis
        assert {w.name for w in wavs} >= {f"{wav.stem}.real.wav", f"{wav.stem}.world.wav"}
    for wav in wavs:
        audio, rate = soundfile.read(wav)
        assert rate == 16000 and len(audio) >= 1600
        assert np.sqrt(np.mean(audio ** 2)) > 1e-3          # not silence
    check_evaluation(json.loads((results / "metrics.json").read_text()))
    # The `test` command renders and judges the same checkpoint again, TensorBoard included.
    printed = workspace.run("trained", "test").stdout
    metrics = json.loads((results / "metrics.json").read_text())
    check_evaluation(metrics)
    assert "results:" in printed and "epoch-1" in printed
    assert list((root / "tensorboard").glob("events.out.tfevents.*"))
    assert_tensorboard_files_images_and_audio_apart(root / "tensorboard", count=2)
    # Another draw (`--seed`) goes beside the default one and leaves it as it was.
    workspace.run("trained", "test", "--seed", "5")
    drawn = results / "seed-5"
    assert json.loads((results / "metrics.json").read_text()) == metrics
    check_evaluation(json.loads((drawn / "metrics.json").read_text()))
    for wav in generated:
        assert not np.array_equal(soundfile.read(wav)[0], soundfile.read(drawn / wav.name)[0])
        assert np.array_equal(soundfile.read(results / f"{wav.stem}.real.wav")[0],
                              soundfile.read(drawn / f"{wav.stem}.real.wav")[0])
    index = json.loads((root / "checkpoints" / "index.json").read_text())
    assert index["best_epoch"] == 1 and math_finite(index["epochs"]["1"]["validation_loss"])

    info = workspace.run("trained", "info").stdout
    assert re.search(r"epoch 1: validation loss \d+\.\d+", info)

    workspace.run("trained", "create_release", "--epoch", "1")
    release = torch.load(root / "checkpoints" / "1.checkpoint.release.pt", weights_only=True)
    assert {"format", "epoch", "config", "model", "data", "normalization", "features"} <= set(release)

    sample = json.loads((root / "data.json").read_text())["utterances"][0]["id"]
    workspace.run("trained", "test_sample", "--sample", sample)
    assert list((results / "samples").glob("*.wav"))
    missing = workspace.run("trained", "test_sample", "--sample", "nope", check=False)
    assert missing.returncode == 2 and "nope" in missing.stderr
    assert not list(root.rglob("*.pkl"))


def check_evaluation(metrics: dict) -> None:
    """metrics.json of a SampleRNN `test`: the model row, the real and WORLD reference rows, each
    with MCD / F0 / V/UV, Resemblyzer similarities and DNSMOS, and Fréchet distances with floors."""
    judged = ("speaker_similarity_own", "speaker_similarity_other", "speaker_identified",
              "dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
    assert metrics["speaker_set"] == "modeling"
    assert 0 < metrics["mean"]["nll_bits"] < 8.5
    rows = {"model": metrics, **metrics["references"]}
    assert set(rows) == {"model", "real", "world"}
    for name, row in rows.items():
        assert set(row["utterances"]) == set(metrics["utterances"]), name
        for key in ("mcd_db", "vuv_error", *judged):
            assert math_finite(row["mean"][key]), (name, key)
        assert -1 <= row["mean"]["speaker_similarity_own"] <= 1
        assert 0 < row["mean"]["dnsmos_ovrl"] <= 5
    assert rows["real"]["mean"]["mcd_db"] == 0.0 and rows["real"]["mean"]["vuv_error"] == 0.0
    # No order between the model and WORLD: the vocoder's predictor carries the recording's
    # envelope, so one epoch already comes within 0.4 dB of WORLD (6.14 / 5.73 dB here).
    assert rows["world"]["mean"]["mcd_db"] > 0 and rows["model"]["mean"]["mcd_db"] > 0
    for embedder in ("resemblyzer", "log_mel"):
        figures = metrics["frechet"][embedder]
        assert figures["generated"] == 2 and figures["real"] >= 2
        assert math_finite(figures["distance"]) and math_finite(figures["floor"])
    assert metrics["evaluation"]["analysis"]["mcep_alpha"] == 0.41
    # 0.1 s cuts end before any word of a demo sentence does: no row has a WER, and
    # metrics.json says why for each utterance (tests/test_intelligibility.py judges longer spans).
    unscored = metrics["evaluation"]["intelligibility"]["unscored"]
    assert set(unscored) == set(metrics["utterances"])
    assert all("before its first word ends" in why for why in unscored.values())
    assert all("wer" not in row["mean"] for row in rows.values())


def test_info_lists_utterance_ids_and_options_follow_the_command(workspace):
    index = json.loads((workspace.experiment("base") / "data.json").read_text())
    # Global options after the command, as `info --experiment-name base`.
    command = [sys.executable, "-m", "samplernn_pase", "info", "--experiment-name", "base",
               "--data-path", str(workspace.data_path)]
    shown = subprocess.run(command, cwd=workspace.root, capture_output=True, text=True,
                           env=workspace.env(), check=True).stdout
    lines = {line.split(" (")[0].strip(): line for line in shown.splitlines()
             if line.startswith("  ") and "): " in line}
    for utterance in index["utterances"]:
        if utterance["split"] == "test":
            assert utterance["id"] in lines[utterance["speaker"]].split()
    every = workspace.run("base", "info", "--split", "all").stdout
    assert all(u["id"] in every.split() for u in index["utterances"])


@pytest.fixture(scope="module")
def trained(workspace) -> str:
    """An experiment trained one epoch (no test renders), shared by the synthesize tests."""
    config = tiny_config(max_epochs=1)
    config["test"]["period"] = None
    workspace.init("synthesis", config)
    workspace.run("synthesis", "train")
    return "synthesis"


def test_init_from_copies_the_weights_and_maps_speaker_rows_by_id(workspace, trained):
    """`init --init-from`: the weights `train` starts from are the source checkpoint's; the
    speaker table is mapped by speaker id, the source's adaptation speaker made a modeling
    speaker here gets the mean of the source's trained rows; config.json says where from."""
    config = tiny_config(max_epochs=1)
    config["data"].update({"modeling_speakers": {"f": 4, "m": 3}, "adaptation_speakers": {"f": 0, "m": 1}})
    (workspace.root / "adapted.json").write_text(json.dumps(config))
    workspace.run("adapted", "init", "--config-path", str(workspace.root / "adapted.json"),
                  "--init-from", trained, "--init-epoch", "best")
    root, source_root = workspace.experiment("adapted"), workspace.experiment(trained)
    snapshot = json.loads((root / "config.json").read_text())
    assert snapshot["init_from"] == {"experiment": trained, "epoch": 1,
                                     "checkpoint": f"experiments/{trained}/checkpoints/1.checkpoint.pt"}
    source = torch.load(source_root / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    initial = torch.load(root / "initial_weights.pt", weights_only=True)["model"]
    table = "mixer.speaker_embedding.weight"
    assert sorted(initial) == sorted(source)
    for name in source:
        if name != table:
            assert torch.equal(initial[name], source[name]), name
    speakers = {s["id"]: s for s in json.loads((source_root / "data.json").read_text())["speakers"]}
    trained_rows = [s["index"] for s in speakers.values() if s["set"] == "modeling"]
    mean = torch.stack([source[table][i] for i in trained_rows]).mean(0)
    made_modeling = []
    for speaker in json.loads((root / "data.json").read_text())["speakers"]:
        old = speakers[speaker["id"]]
        if old["set"] == "modeling":
            assert torch.equal(initial[table][speaker["index"]], source[table][old["index"]])
        else:
            assert torch.allclose(initial[table][speaker["index"]], mean, atol=1e-7)
            made_modeling += [speaker["id"]] if speaker["set"] == "modeling" else []
    assert len(made_modeling) == 1            # the source's adaptation speaker f, trained here
    # What `train` starts from, before any step (the loop's resume, as `train` runs it).
    from argparse import Namespace
    from samplernn_pase.cli import make_runner
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.training.distributed import Distributed
    from samplernn_pase.training.loop import Trainer
    experiment = Experiment(workspace.root / "experiments", "adapted")
    runner = make_runner(Namespace(data_path=workspace.data_path), experiment, torch.device("cpu"))
    assert not torch.equal(runner.model.state_dict()[table], initial[table])
    Trainer(experiment, runner, Distributed()).resume()
    for name, value in runner.model.state_dict().items():
        assert torch.equal(value, initial[name]), name
    assert_speaker_tables_map_by_id(workspace, trained, {table})


def test_init_from_refuses_another_architecture_in_one_line(workspace, trained):
    """A wider GRU: one line naming the first differing parameter and both shapes, exit 2, no
    experiment folder; a missing epoch likewise, before any corpus work."""
    config_path = workspace.root / "mismatched.json"
    config_path.write_text(json.dumps(tiny_config()))
    matches = []
    for options, pattern in [
            (["--set", "model.rnn_hidden_size=32"],
             r"error: --init-from synthesis \(epoch 1\): the architectures differ at (\S+): "
             r"\(([\d, ]+)\) there, \(([\d, ]+)\) here"),
            (["--init-epoch", "7"], r"error: .*: init_from: synthesis has no checkpoint of epoch 7 "
                                    r"\(available: 1\)")]:
        result = workspace.run("mismatched", "init", "--config-path", str(config_path),
                               "--init-from", trained, *options, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        matches.append(re.fullmatch(pattern, lines[0]))
        assert matches[-1], lines[0]
        assert not workspace.experiment("mismatched").exists()
    source = torch.load(workspace.experiment(trained) / "checkpoints" / "1.checkpoint.pt",
                        weights_only=True)["model"]
    name, there, here = matches[0].groups()
    shape = tuple(source[name].shape)
    assert there == ", ".join(map(str, shape)).rstrip() and here != there
    # The parameters before it do not depend on the GRU's width (24: 72 gate rows).
    assert 24 in shape or 72 in shape
    before = list(source)[:list(source).index(name)]
    assert not any({24, 72} & set(source[key].shape) for key in before), before


def assert_speaker_tables_map_by_id(space, name: str, expected: set[str]) -> None:
    """`init --init-from`'s transfer on a family's real model and checkpoint: the runner declares
    the `expected` speaker tables; with every speaker made a modeling speaker and listed in
    reverse order, each block of rows follows its speaker id, a speaker the source never trained
    gets the mean of the trained ones' (in a table the family fills from its data, the rows the
    new model has), and every other tensor is copied as it is."""
    from argparse import Namespace
    from samplernn_pase.cli import make_runner
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.experiment.weights import transferred_weights
    experiment = Experiment(space.root / "experiments", name)
    runner = make_runner(Namespace(data_path=space.data_path), experiment, torch.device("cpu"))
    tables = runner.speaker_tables()
    assert set(tables) == expected
    source = torch.load(experiment.checkpoint_path(experiment.checkpoint_epochs()[-1]),
                        weights_only=True)["model"]
    speakers = experiment.data_index()["speakers"]
    count = len(speakers)
    reordered = [{**s, "index": count - 1 - s["index"], "set": "modeling"} for s in speakers]
    own = runner.data_speaker_tables()
    target = runner.model.state_dict()
    got = transferred_weights(source, speakers, target, reordered, tables, name, own)
    for key, value in source.items():
        if key not in tables:
            assert torch.equal(got[key], value), key
            continue
        first, per = tables[key]
        end = first + count * per
        assert torch.equal(got[key][:first], value[:first]) and torch.equal(got[key][end:], value[end:])
        blocks = value[first:end].reshape(count, per, *value.shape[1:])
        mean = blocks[[s["index"] for s in speakers if s["set"] == "modeling"]].mean(0)
        for speaker in speakers:
            row = first + (count - 1 - speaker["index"]) * per
            want = (blocks[speaker["index"]] if speaker["set"] == "modeling"
                    else target[key][row:row + per] if key in own else mean)
            assert torch.allclose(got[key][row:row + per], want, atol=1e-6), (key, speaker["id"])


def test_synthesize_from_a_release_alone(workspace, trained, tmp_path):
    # A copy of the shared one-epoch experiment: this test moves its folder away.
    shutil.copytree(workspace.experiment(trained), workspace.experiment("released"))
    again = workspace.run("released", "train")       # --max-epochs is absolute: nothing left
    assert "nothing to train" in again.stdout and "epoch 1 is done" in again.stdout
    # Adaptation speakers have a row in the embedding table that training never touched.
    refused = workspace.run("released", "test", "--speakers", "adaptation", check=False)
    assert refused.returncode == 2 and "never trained" in refused.stderr
    tested = workspace.run("released", "test")
    assert "test epoch 1 (2 utterances)" in tested.stdout
    root = workspace.experiment("released")
    assert "test released epoch 1" in (root / "verbose.log").read_text()
    shown = workspace.run("released", "create_release", "--epoch", "1").stdout
    utterance = shown.split("test utterances: ")[1].split()[0].rstrip(")")
    release = tmp_path / "voice.release.pt"
    (root / "checkpoints" / "1.checkpoint.release.pt").rename(release)
    root.rename(tmp_path / "moved-away")                     # no experiment folder any more
    empty_data = tmp_path / "no-data"
    empty_data.mkdir()
    loaded = torch.load(release, weights_only=True)
    assert [s["id"] for s in loaded["data"]["speakers"]] == loaded["normalization"]["speakers"]
    command = [sys.executable, "-m", "samplernn_pase", "synthesize", "--release", str(release),
               "--utterance", utterance, "--output-dir", str(tmp_path / "out"),
               "--data-path", str(empty_data)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            env=workspace.env())
    assert result.returncode == 0, result.stderr[-3000:]
    audio, rate = soundfile.read(tmp_path / "out" / f"{utterance}.wav")
    assert rate == 16000 and len(audio) >= 1600 and np.sqrt(np.mean(audio ** 2)) > 1e-3
    missing = subprocess.run(command[:7] + ["nope"], cwd=tmp_path, capture_output=True,
                             text=True, env=workspace.env())
    assert missing.returncode == 2 and "--utterance nope" in missing.stderr


def assert_tensorboard_files_images_and_audio_apart(logdir: Path, count: int) -> None:
    """TensorBoard's own reader finds each spectrogram under an image tag and each audio
    under a different audio tag (one tag holding both shows under audio only)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"images": 0, "audio": 0})
    events.Reload()
    images, audio = events.Tags()["images"], events.Tags()["audio"]
    assert len(images) == count and len(audio) == count, (images, audio)
    assert not set(images) & set(audio)
    assert all(tag.startswith("test_spectrogram/") for tag in images)
    assert all(tag.startswith("test_audio/") for tag in audio)
    image = events.Images(images[0])[-1]
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100
    assert events.Audio(audio[0])[-1].sample_rate == 16000


def math_finite(value) -> bool:
    return isinstance(value, float) and np.isfinite(value)


def wait_for_iteration(experiment: Path, iteration: int, process, timeout=600, parse=None, poll=0.2):
    """Wait until verbose.log shows `iteration` (`parse`: the log parser, logged_losses by default),
    looking every `poll` seconds."""
    parse = parse or logged_losses
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (experiment / "verbose.log").exists() and max(parse(experiment), default=0) >= iteration:
            return
        if process.poll() is not None:
            raise AssertionError(f"train ended early:\n{process.stderr.read()[-3000:]}")
        time.sleep(poll)
    raise AssertionError("training did not reach the iteration in time")


def sigkill_at_iteration_then_resume(space, name: str, iteration: int, parse) -> dict:
    """Starts `train` of experiment ``name``, SIGKILLs it once verbose.log shows ``iteration``
    (past a mid-epoch checkpoint), checks the partial checkpoint is there and trains again to
    the end; returns the log's losses (``parse``) of the resumed run."""
    experiment = space.experiment(name)
    process = subprocess.Popen(space.command(name, "train"), cwd=space.root, env=space.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_iteration(experiment, iteration, process, parse=parse, poll=0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (experiment / "checkpoints" / "partial.checkpoint.pt").is_file()
    space.run(name, "train")
    return parse(experiment)


def test_sigkill_and_resume_gives_the_uninterrupted_losses(workspace):
    config = tiny_config(max_epochs=2)
    config["test"]["period"] = None
    workspace.init("straight", config)
    workspace.init("killed", config)
    workspace.run("straight", "train")
    reference = logged_losses(workspace.experiment("straight"))
    epochs = logged_losses(workspace.experiment("straight"), with_epochs=True)
    second_epoch = [i for i, (epoch, _) in epochs.items() if epoch == 2]
    assert len(second_epoch) > 8, "the test needs several iterations per epoch"

    # Kill mid-epoch 2, after a mid-epoch checkpoint and a few steps past it.
    killed = workspace.experiment("killed")
    target = min(second_epoch) + 6
    # The killed run also reads ahead in a thread (--num-workers): same batches, same losses.
    process = subprocess.Popen(workspace.command("killed", "train", "--num-workers", "2"),
                               cwd=workspace.root,
                               env=workspace.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    wait_for_iteration(killed, target, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoints" / "1.checkpoint.pt").is_file()
    for checkpoint in (killed / "checkpoints").glob("*.pt"):       # none truncated
        torch.load(checkpoint, weights_only=True)
    workspace.run("killed", "train", "--num-workers", "2")
    resumed = logged_losses(killed)
    assert sorted(resumed) == sorted(reference)
    for iteration, loss in reference.items():
        assert abs(resumed[iteration] - loss) <= 1e-6, (iteration, resumed[iteration], loss)
    straight_index = json.loads((workspace.experiment("straight") / "checkpoints/index.json").read_text())
    killed_index = json.loads((killed / "checkpoints/index.json").read_text())
    for epoch in ("1", "2"):
        assert abs(straight_index["epochs"][epoch]["validation_loss"]
                   - killed_index["epochs"][epoch]["validation_loss"]) <= 1e-6
    assert not list((killed / "checkpoints").glob(".*.tmp"))
    assert not (killed / "train.lock").exists()


@pytest.mark.parametrize("sent, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_train_saves_a_checkpoint_and_exits_non_zero(workspace, sent, status):
    name = f"interrupted-{sent.name.lower()}"
    config = tiny_config(max_epochs=3, checkpoint_period=None)
    config["test"]["period"] = None
    workspace.init(name, config)
    root = workspace.experiment(name)
    process = subprocess.Popen(workspace.command(name, "train"), cwd=workspace.root,
                               env=workspace.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    wait_for_iteration(root, 3, process)
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)
    # 128 + the signal number, as a shell reports a process killed by it: `train && test`
    # must not go on after an interrupted run.
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr and f"{sent.name} received" in stderr
    assert "training done" not in stdout
    state = torch.load(root / "checkpoints" / "partial.checkpoint.pt", weights_only=True)
    assert state["loop"]["iteration"] >= 3 and not state["loop"]["epoch_complete"]


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: R, S, T (stopped), Z (dead, not yet reaped)..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_sigkilled_trainer_is_resumed_at_once_and_a_live_one_refuses_a_second(workspace):
    """The lock is the kernel's (flock): a live trainer, even a stopped one, refuses a second in
    one line naming the lock file; once it is SIGKILLed, the same command resumes at once, while
    the killed pid still exists as an unreaped zombie (where a pid-alive check still refused)."""
    config = tiny_config(max_epochs=1)
    config["test"]["period"] = None
    workspace.init("requeued", config)
    root = workspace.experiment("requeued")
    first = subprocess.Popen(workspace.command("requeued", "train"), cwd=workspace.root,
                             env=workspace.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        wait_for_iteration(root, 6, first, poll=0.05)    # past the checkpoint of iteration 4
        os.killpg(first.pid, signal.SIGSTOP)
        second = workspace.run("requeued", "train", check=False)
        lock = Path("experiments") / "requeued" / "train.lock"
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: {lock}: experiment is being trained by pid {first.pid} on {socket.gethostname()}"]
        os.killpg(first.pid, signal.SIGKILL)
        while process_state(first.pid) != "Z":
            time.sleep(0.01)
        resumed = workspace.run("requeued", "train", check=False)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (root / "verbose.log").read_text()
    match = re.search(r"resumed from \S+partial\.checkpoint\.pt \(epoch 1, iteration (\d+)\)", log)
    assert match and int(match.group(1)) >= 4, log[-3000:]
    after = logged_losses_of(log[match.end():])
    assert min(after) == int(match.group(1)) + 1 and (root / "checkpoints" / "1.checkpoint.pt").is_file()
    assert not (root / "train.lock").exists()


def logged_losses_of(text: str) -> dict[int, float]:
    return {int(m.group(2)): float(m.group(3)) for m in LOSS_RE.finditer(text)}


def test_tensorboard_serves_the_experiment_on_localhost(workspace):
    import socket
    import urllib.request

    with socket.socket() as probe:           # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(workspace.command("base", "tensorboard", "--port", str(port)),
                               cwd=workspace.root, env=workspace.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"tensorboard did not serve:\n{process.stderr.read()[-2000:]}")
                time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_init_and_train_on_an_ljspeech_layout(tmp_path, demo_corpus_path):
    """A single-speaker corpus without labels: acoustic conditioning trains; linguistic is refused."""

    data = tmp_path / "data"
    root = data / "LJSpeech-1.1"
    (root / "wavs").mkdir(parents=True)
    rows = []
    for number in range(1, 9):
        shutil.copy(demo_corpus_path / "f1" / f"f1_{number:03d}.wav", root / "wavs" / f"LJ001-{number:04d}.wav")
        rows.append(f"LJ001-{number:04d}|Sentence {number}.|Sentence {number}.")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    config = tiny_config(max_epochs=1)
    config["data"].update({"corpora": [{"type": "ljspeech", "path": "LJSpeech-1.1"}],
                           "modeling_speakers": None, "adaptation_speakers": None})
    config["test"]["period"] = None
    vocoder = {k: config["model"][k] for k in ("conditioning", "lpc_order", "harmonic_source")}
    config["model"].update({"conditioning": "linguistic_lf0", "lpc_order": 0, "harmonic_source": False})
    space = Workspace(tmp_path, data)
    path = tmp_path / "lj.json"
    path.write_text(json.dumps(config))
    refused = space.run("lj", "init", "--config-path", str(path), check=False)
    assert refused.returncode == 2 and "model.conditioning" in refused.stderr
    assert not space.experiment("lj").exists()

    config["model"].update(vocoder)     # the default: acoustic, as a source-filter vocoder
    space.init("lj", config)
    index = json.loads((space.experiment("lj") / "data.json").read_text())
    assert len(index["speakers"]) == 1 and index["speakers"][0]["set"] == "modeling"
    assert index["report"]["kept"] == 8
    space.run("lj", "train")
    assert (space.experiment("lj") / "checkpoints" / "1.checkpoint.pt").is_file()


def test_arctic_layout_with_full_context_labels_inits_and_trains_linguistic(tmp_path, demo_corpus_path,
                                                                           to_state_level):
    """CMU ARCTIC layout, HTS full-context labels in lab/ (slt phone level, bdl state level, as
    HTS-demo and Merlin write them): `init` keeps every utterance, `train` with linguistic
    conditioning runs, and the mixer has the seed's widths (195 / 197 + the speaker's 15)."""

    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.runners.base import RunContext
    from samplernn_pase.runners.samplernn import SampleRNNRunner

    data = tmp_path / "data"
    for speaker, demo_speaker, level in (("slt", "f2", "phone"), ("bdl", "m2", "state")):
        folder = data / "arctic" / f"cmu_us_{speaker}_arctic"
        for sub in ("wav", "lab", "etc"):
            (folder / sub).mkdir(parents=True)
        prompts = []
        for number in range(1, 6):
            stem = f"arctic_a{number:04d}"
            source = demo_corpus_path / demo_speaker / f"{demo_speaker}_{number:03d}"
            shutil.copy(source.with_suffix(".wav"), folder / "wav" / f"{stem}.wav")
            lines = source.with_suffix(".lab").read_text().splitlines()
            if level == "state":
                lines = to_state_level(lines)
            assert "/I:" in lines[1] and "=" in lines[1].split("/I:")[1]  # the real layout: /I:i1=i2
            (folder / "lab" / f"{stem}.lab").write_text("\n".join(lines) + "\n")
            prompts.append(f'( {stem} "Sentence {number}." )')
        (folder / "etc" / "txt.done.data").write_text("\n".join(prompts) + "\n")
    config = tiny_config(max_epochs=1, sequence_length=16)
    config["model"].update({"conditioning": "linguistic", "linguistic_embedding_size": 15,
                            "speaker_embedding_size": 15,   # the seed's sizes
                            "lpc_order": 0, "harmonic_source": False})
    config["data"].update({"corpora": [{"type": "cmu_arctic", "path": "arctic"}],
                           "modeling_speakers": {"f": 1, "m": 1}, "adaptation_speakers": None,
                           "train_seconds_per_speaker": None})
    config["test"]["period"] = None
    space = Workspace(tmp_path, data)
    space.init("arctic", config)
    root = space.experiment("arctic")
    index = json.loads((root / "data.json").read_text())
    assert index["report"]["kept"] == 10 and index["report"]["dropped"] == {}
    assert len(index["utterances"]) == 10 and all(u["has_labels"] for u in index["utterances"])
    assert {s["gender"] for s in index["speakers"]} == {"f", "m"}
    vocabularies = index["linguistic"]["vocabularies"]
    assert {"sil", "pau"} <= set(vocabularies["phoneme"]) and "L-L%" in vocabularies["tobi"]

    space.run("arctic", "train", "--device", "cpu")
    losses = logged_losses(root)
    assert losses and all(np.isfinite(v) for v in losses.values())
    model = torch.load(root / "checkpoints" / "1.checkpoint.pt", weights_only=True)["model"]
    assert model["mixer.mix.weight"].shape[1] == 15 + 195
    assert [tuple(model[f"mixer.linguistic_tables.{i}.weight"].shape) for i in range(4)] == \
        [(len(vocabularies[t]), 15) for t in ("phoneme", "vowel", "pos", "tobi")]

    # The same experiment's config with linguistic + log-F0: the runner builds a 197-wide content vector.
    lf0_config = json.loads((root / "config.json").read_text())
    lf0_config["model"]["conditioning"] = "linguistic_lf0"
    runner = SampleRNNRunner(RunContext(experiment=Experiment(tmp_path / "experiments", "arctic"),
                                        config=lf0_config, data_path=data, device=torch.device("cpu")))
    assert runner.model.mixer.content_size == 197 and runner.model.mixer.mix.in_features == 15 + 197


def synthesized(result) -> tuple[Path, np.ndarray]:
    """The wav whose path `synthesize` printed (its spectrogram beside it), and its audio:
    16 kHz, finite, not silence."""
    assert result.returncode == 0, result.stderr[-3000:]
    wav = Path(result.stdout.strip().splitlines()[-1].removeprefix("wav: "))
    assert wav.with_suffix(".png").is_file()
    audio, rate = soundfile.read(wav)
    assert rate == 16000 and np.all(np.isfinite(audio)) and np.sqrt(np.mean(audio ** 2)) > 1e-3
    return wav, audio


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_synthesize_espeak_text_revocodes_the_demo_front_ends_reading(workspace, trained, tmp_path):
    from samplernn_pase.data.demo_corpus import read_text

    index = json.loads((workspace.experiment(trained) / "data.json").read_text())
    speaker = next(s["id"] for s in index["speakers"] if s["set"] == "modeling")
    text = "Hello there."
    _, audio = synthesized(workspace.run(trained, "synthesize", "--espeak-text", text, "--speaker",
                                         speaker, "--output-dir", str(tmp_path / "out")))
    # eSpeak NG's own reading of the text by that voice sets the duration (whole frames of it).
    espeak, _ = soundfile.read(read_text(text, speaker.removeprefix("demo_"), 16000, tmp_path / "espeak"))
    assert len(espeak) - 80 < len(audio) <= len(espeak)

    unknown = one_line_error(workspace.run(trained, "synthesize", "--espeak-text", text, "--speaker",
                                           "nobody", check=False))
    assert "--speaker nobody" in unknown and all(s["id"] in unknown for s in index["speakers"])
    nameless = one_line_error(workspace.run(trained, "synthesize", "--espeak-text", text, check=False))
    assert "--speaker" in nameless
    adaptation = next(s["id"] for s in index["speakers"] if s["set"] == "adaptation")
    untrained = one_line_error(workspace.run(trained, "synthesize", "--espeak-text", text, "--speaker",
                                             adaptation, check=False))
    assert adaptation in untrained and "never trained" in untrained


def test_synthesize_features_file_from_a_release(workspace, trained, tmp_path):
    """A test utterance's features, as init cached them, cut to 30 frames: 30 x hop samples."""
    root = workspace.experiment(trained)
    workspace.run(trained, "create_release", "--epoch", "1")
    release = root / "checkpoints" / "1.checkpoint.release.pt"
    utterance = next(u for u in json.loads((root / "data.json").read_text())["utterances"]
                     if u["split"] == "test")
    with np.load(workspace.data_path / utterance["features"]) as entry:
        arrays = {name: entry[name] for name in entry.files}
    frames = 30
    for name in ("acoustic", "phone_index", "position_in_phone"):
        arrays[name] = arrays[name][:frames]
    arrays["audio"] = arrays["audio"][:frames * 80]
    features = tmp_path / "cut.npz"
    np.savez(features, **arrays)
    command = [sys.executable, "-m", "samplernn_pase", "synthesize", "--release", str(release),
               "--speaker", utterance["speaker"], "--output-dir", str(tmp_path / "out")]

    def synthesize(*args):
        return subprocess.run(command + list(args), cwd=tmp_path, capture_output=True, text=True,
                              env=workspace.env())

    _, audio = synthesized(synthesize("--features", str(features)))
    assert len(audio) == frames * 80

    # Without the recording (features from elsewhere, e.g. an acoustic model): WORLD's
    # rendering of the features is the reference.
    without_audio = tmp_path / "without_audio.npz"
    np.savez(without_audio, **{k: v for k, v in arrays.items() if k != "audio"})
    wav, audio = synthesized(synthesize("--features", str(without_audio)))
    world, _ = soundfile.read(wav.with_name(f"{wav.stem}.world.wav"))
    assert len(audio) == len(world) == frames * 80 and not wav.with_name(f"{wav.stem}.real.wav").exists()

    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, **{**arrays, "acoustic": arrays["acoustic"][:, :40]})
    error = one_line_error(synthesize("--features", str(narrow)))
    assert str(narrow) in error and "acoustic" in error and "43" in error
    error = one_line_error(synthesize("--features", str(features), "--speaker", "nobody"))
    assert "--speaker nobody" in error and utterance["speaker"] in error

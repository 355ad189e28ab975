"""Exact resume on the real CLI and demo corpus: under torchrun (2 CPU processes, gloo) after a
SIGKILL in the middle of an epoch, and from an epoch checkpoint before test rendering; MelNet's
normalization computed once, by `init`.

Every comparison is against an uninterrupted run of the same command: the per-iteration
training losses (rank 0's, which depend on every rank's batches through the averaged
gradients) and the validation losses must agree to 1e-6.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_cli_melnet import tiny_melnet_config
from test_cli_pase import tiny_pase_config
from test_cli_samplernn import Workspace, tiny_config

LOSS_RE = re.compile(r"epoch (\d+) iteration (\d+) \w+ (\S+)")


def losses(experiment: Path) -> dict[int, tuple[int, float]]:
    """Iteration -> (epoch, training loss) from verbose.log; a re-run iteration keeps its last value."""
    found = {}
    for line in (experiment / "verbose.log").read_text().splitlines():
        match = LOSS_RE.search(line)
        if match:
            found[int(match.group(2))] = (int(match.group(1)), float(match.group(3)))
    return found


def validation_losses(experiment: Path) -> dict[str, float]:
    index = json.loads((experiment / "checkpoints" / "index.json").read_text())
    return {epoch: entry["validation_loss"] for epoch, entry in index["epochs"].items()}


def assert_same_run(resumed: Path, reference: Path) -> None:
    got, want = losses(resumed), losses(reference)
    assert sorted(got) == sorted(want)
    for iteration, (epoch, loss) in want.items():
        assert got[iteration][0] == epoch and abs(got[iteration][1] - loss) <= 1e-6, \
            (iteration, got[iteration], loss)
    got, want = validation_losses(resumed), validation_losses(reference)
    assert sorted(got) == sorted(want)
    for epoch in want:
        assert abs(got[epoch] - want[epoch]) <= 1e-6, (epoch, got[epoch], want[epoch])


def torchrun(space: Workspace, name: str, *args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", *space.command(name, "train", "--device", "cpu", *args)[2:]]


def run_torchrun(space: Workspace, name: str, *args) -> str:
    result = subprocess.run(torchrun(space, name, *args), cwd=space.root, capture_output=True,
                            text=True, timeout=900, env=space.env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def kill_torchrun_at(space: Workspace, name: str, iteration: int, timeout=600) -> None:
    """Run `train` under torchrun and SIGKILL the launcher and both ranks at once once rank 0
    has logged `iteration`."""
    process = subprocess.Popen(torchrun(space, name), cwd=space.root, env=space.env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    experiment = space.experiment(name)
    deadline = time.time() + timeout
    try:
        while max(losses(experiment) if (experiment / "verbose.log").exists() else {}, default=0) < iteration:
            if process.poll() is not None:
                raise AssertionError(f"train ended early:\n{process.stderr.read()[-3000:]}")
            if time.time() > deadline:
                raise AssertionError("training did not reach the iteration in time")
            time.sleep(0.1)
    finally:
        for pid in process_tree(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()


def sigkill_and_resume_under_torchrun(space: Workspace, config: dict, family: str,
                                      epoch_first: bool = False) -> tuple[Path, Path]:
    """An uninterrupted 2-process run, and the same command killed in the middle of epoch 2 and
    run again (with `epoch_first`, the killed run also stops and resumes after epoch 1)."""
    space.init(f"{family}-straight", config)
    space.init(f"{family}-killed", config)
    straight, killed = space.experiment(f"{family}-straight"), space.experiment(f"{family}-killed")
    log = run_torchrun(space, f"{family}-straight")
    assert "Traceback" not in log
    second_epoch = sorted(i for i, (epoch, _) in losses(straight).items() if epoch == 2)
    assert len(second_epoch) >= 8, "the test needs several iterations per epoch"
    if epoch_first:
        run_torchrun(space, f"{family}-killed", "--max-epochs", "1")
        assert (killed / "checkpoints" / "1.checkpoint.pt").is_file()
    kill_torchrun_at(space, f"{family}-killed", second_epoch[0] + 5)
    partial = torch.load(killed / "checkpoints" / "partial.checkpoint.pt", weights_only=True)
    assert partial["loop"]["epoch"] == 2 and not partial["loop"]["epoch_complete"]
    ranks = partial["ranks"]            # each rank's own position and carried states
    assert len(ranks) == 2 and ranks[0]["loader"]["rank"] == 0 and ranks[1]["loader"]["rank"] == 1
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])
    run_torchrun(space, f"{family}-killed")
    assert_same_run(killed, straight)
    assert not (killed / "train.lock").exists()
    return straight, killed


@pytest.fixture(scope="module")
def space(tmp_path_factory, demo_data_path):
    return Workspace(tmp_path_factory.mktemp("resume"), demo_data_path)


def test_samplernn_torchrun_sigkill_mid_epoch_resumes_exactly(space):
    config = tiny_config(max_epochs=2, checkpoint_period=4, sequence_length=8)
    config["test"]["period"] = None     # rendering under torchrun: the MelNet test below
    straight, killed = sigkill_and_resume_under_torchrun(space, config, "samplernn")
    # The ranks read disjoint halves: an epoch took the iterations of one shard, not of the split.
    from samplernn_pase.data.stateful_loader import StatefulLoader

    index = json.loads((straight / "data.json").read_text())
    modeling = {s["id"] for s in index["speakers"] if s["set"] == "modeling"}
    frames = {u["id"]: u["num_frames"] for u in index["utterances"]
              if u["split"] == "train" and u["speaker"] in modeling}

    class Lengths:
        def num_frames(self, item):
            return frames[item]

    def batches(rank, world_size):
        return len(StatefulLoader(Lengths(), list(frames), 3, 8, seed=0, epoch=1, rank=rank,
                                  world_size=world_size))

    per_epoch = [sum(1 for epoch, _ in losses(straight).values() if epoch == e) for e in (1, 2)]
    assert per_epoch[0] == batches(0, 2) == batches(1, 2) < batches(0, 1)
    assert "world size 2" in (straight / "verbose.log").read_text()


def test_melnet_torchrun_epoch_checkpoint_then_sigkill_mid_epoch_resumes_exactly(space):
    """Also MelNet's resume from an epoch checkpoint written before test rendering, and the
    rendering shared out over the ranks (rank 0 writes both ranks' items)."""
    config = tiny_melnet_config()
    config["training"].update({"max_epochs": 2, "checkpoint_period": 3, "batch_size": 2})
    config["test"].update({"period": 1, "max_seconds": 0.16})
    straight, killed = sigkill_and_resume_under_torchrun(space, config, "melnet", epoch_first=True)
    for run in (straight, killed):
        rendered = sorted(p.name for p in (run / "results" / "epoch-1").glob("*.wav")
                          if not p.name.endswith((".real.wav", ".griffin_lim.wav")))
        assert len(rendered) == 4 and sum(name.startswith("sample-") for name in rendered) == 2


def test_pase_resume_from_epoch_checkpoint_after_test_rendering(space):
    config = tiny_pase_config()
    config["training"].update({"max_epochs": 2})
    config["test"] = {"period": 1}
    space.init("pase-straight", config)
    space.init("pase-resumed", config)
    space.run("pase-straight", "train")
    # Stopped right after epoch 1 (its checkpoint, validation and test), then the same command.
    space.run("pase-resumed", "train", "--max-epochs", "1")
    assert (space.experiment("pase-resumed") / "results" / "epoch-1" / "metrics.json").is_file()
    space.run("pase-resumed", "train")
    assert_same_run(space.experiment("pase-resumed"), space.experiment("pase-straight"))


def test_melnet_normalization_is_computed_by_init_and_only_read_later(space):
    from samplernn_pase.audio.mel import mel_spectrogram
    from samplernn_pase.cli import make_runner
    from samplernn_pase.data.store import UtteranceStore
    from samplernn_pase.experiment.folder import Experiment, atomic_save_npz

    config = tiny_melnet_config()
    space.init("melnet-normalization", config)
    experiment = Experiment(space.root / "experiments", "melnet-normalization")
    normalization = experiment.normalization()
    index = experiment.data_index()
    # The statistics of every log-mel value of the modeling speakers' training split.
    store = UtteranceStore(index, normalization, space.data_path)
    modeling = {s["id"] for s in index["speakers"] if s["set"] == "modeling"}
    model = config["model"]
    values = np.concatenate([
        mel_spectrogram(torch.from_numpy(np.array(store.load(u["id"]).audio)), 16000, model["n_fft"],
                        model["hop_length"], model["win_length"], model["n_mels"], model["fmin"],
                        model["fmax"]).numpy().reshape(-1)
        for u in index["utterances"] if u["split"] == "train" and u["speaker"] in modeling])
    assert float(normalization["mel_mean"]) == pytest.approx(float(values.mean()), rel=1e-5)
    assert float(normalization["mel_std"]) == pytest.approx(float(values.std()), rel=1e-4)

    # What train and test do: the runner reads the file and loads no utterance to recompute it.
    normalization["mel_mean"] = np.float64(1.5)
    atomic_save_npz(experiment.normalization_path, normalization)
    args = argparse.Namespace(data_path=space.data_path)
    runner = make_runner(args, experiment, torch.device("cpu"))
    runner.train_batches(1, None)                  # planning an epoch needs no audio either
    assert runner.source.mean == 1.5 and runner.source.std == pytest.approx(float(values.std()), rel=1e-4)
    assert len(runner.store._cache) == 0           # every utterance the store loads is kept there

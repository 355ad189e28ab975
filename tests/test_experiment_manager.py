"""The experiment manager without training: config validation, folder, lock, CLI errors."""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samplernn_pase.errors import UserError
from samplernn_pase.experiment import folder
from samplernn_pase.experiment.config import read_config_file, validate_config
from samplernn_pase.experiment.folder import Experiment

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "samplernn_pase", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_default_config_validates_and_fills_defaults():
    config = validate_config(read_config_file(ROOT / "config.default.json"))
    assert config["model"]["type"] == "samplernn"
    assert config["training"]["scheduler"]["type"] == "plateau"
    assert config["test"]["period"] >= 1
    assert "hop_length" in config["data"]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    validate_config(read_config_file(path), str(path))


def test_schema_violation_names_the_field():
    config = read_config_file(ROOT / "config.default.json")
    config["training"]["batch_size"] = 0
    with pytest.raises(UserError, match=r"training\.batch_size"):
        validate_config(config, "my.json")
    config["training"]["batch_size"] = 4
    config["model"]["type"] = "wavenet"
    with pytest.raises(UserError, match=r"model\.type: unknown model type 'wavenet'"):
        validate_config(config, "my.json")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    folder.atomic_write_json(target, {"version": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(folder.os, "replace", crash)
    with pytest.raises(OSError):
        folder.atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError):
        folder.atomic_save_npz(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)})


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    import pickle

    path = tmp_path / "1.checkpoint.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Payload()}, path, pickle_module=pickle)
    with pytest.raises(UserError, match="cannot be loaded"):
        folder.torch_load(path)


def test_lock_refuses_second_trainer_and_takes_over_stale_lock(tmp_path):
    experiment = Experiment(tmp_path, "x")
    with experiment.lock():
        with pytest.raises(UserError, match="being trained by pid"):
            with experiment.lock():
                pass
    assert not experiment.lock_path.exists()
    # A file left behind by a process that no longer holds it is taken over, whatever it says.
    experiment.lock_path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with experiment.lock():
        assert json.loads(experiment.lock_path.read_text())["pid"] == os.getpid()


def test_lock_is_held_by_the_kernel_across_processes(tmp_path):
    """Another process holding flock on train.lock (whatever the file says) refuses a trainer."""
    experiment = Experiment(tmp_path, "x")
    experiment.lock_path.parent.mkdir(parents=True)
    experiment.lock_path.write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, sys, time; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(experiment.lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="being trained by another process"):
            with experiment.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with experiment.lock():           # released by the kernel when the holder died
        pass


def test_lock_without_flock_warns_and_falls_back_to_the_pid(tmp_path, monkeypatch, caplog):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(folder.fcntl, "flock", no_flock)
    experiment = Experiment(tmp_path, "x")
    with caplog.at_level("WARNING", logger="samplernn_pase"):
        with experiment.lock():
            assert json.loads(experiment.lock_path.read_text())["pid"] == os.getpid()
    assert "does not support flock" in caplog.text and str(experiment.lock_path) in caplog.text
    experiment.lock_path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(UserError, match=f"pid {os.getppid()} .*remove the file"):
        with experiment.lock():
            pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    experiment.lock_path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with experiment.lock():
        assert json.loads(experiment.lock_path.read_text())["pid"] == os.getpid()


def test_transferred_weights_map_speaker_blocks_by_id_and_give_new_speakers_the_mean():
    """A table with a leading row (a start token), two rows per speaker and a trailing row (as
    the GPT prior's and the acoustic model's): rows follow the speaker id, a speaker the source
    never trained (b: adaptation there; d: absent there) gets the mean of a's and c's blocks."""
    from samplernn_pase.experiment.weights import transferred_weights
    source_speakers = [{"id": "a", "index": 0, "set": "modeling"}, {"id": "b", "index": 1, "set": "adaptation"},
                       {"id": "c", "index": 2, "set": "modeling"}]
    target_speakers = [{"id": "c", "index": 0, "set": "modeling"}, {"id": "d", "index": 1, "set": "modeling"},
                       {"id": "a", "index": 2, "set": "modeling"}, {"id": "b", "index": 3, "set": "modeling"}]
    table = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)   # start, a a, b b, c c, end
    source = {"layer.weight": torch.randn(4, 2), "table.weight": table}
    target = {"layer.weight": torch.zeros(4, 2), "table.weight": torch.zeros(10, 3)}
    got = transferred_weights(source, source_speakers, target, target_speakers,
                              {"table.weight": (1, 2)}, "--init-from x")
    assert torch.equal(got["layer.weight"], source["layer.weight"])
    a, c = table[1:3], table[5:7]
    mean = (a + c) / 2
    assert torch.equal(got["table.weight"], torch.cat([table[:1], c, mean, a, mean, table[7:]]))
    # A table the target fills from its own data (the acoustic model's per-symbol means): the
    # speakers new there (d, b) keep the target's rows, the trained ones take the source's.
    own = 100 + torch.arange(10 * 3, dtype=torch.float32).reshape(10, 3)
    got = transferred_weights(source, source_speakers, {**target, "table.weight": own}, target_speakers,
                              {"table.weight": (1, 2)}, "--init-from x", frozenset({"table.weight"}))
    assert torch.equal(got["table.weight"], torch.cat([table[:1], c, own[3:5], a, own[7:9], table[7:]]))
    with pytest.raises(UserError, match=r"^--init-from x: the architectures differ at "
                                        r"layer\.weight: \(4, 2\) there, \(4, 3\) here$"):
        transferred_weights(source, source_speakers, {**target, "layer.weight": torch.zeros(4, 3)},
                            target_speakers, {"table.weight": (1, 2)}, "--init-from x")
    with pytest.raises(UserError, match=r"table\.weight: \(8, 3\) there, \(10, 4\) here"):
        transferred_weights(source, source_speakers, {**target, "table.weight": torch.zeros(10, 4)},
                            target_speakers, {"table.weight": (1, 2)}, "--init-from x")
    with pytest.raises(UserError, match=r"extra\.bias: \(2,\) there, absent here"):
        transferred_weights({**source, "extra.bias": torch.zeros(2)}, source_speakers, target,
                            target_speakers, {"table.weight": (1, 2)}, "--init-from x")


def test_creating_leaves_nothing_on_failure(tmp_path):
    experiment = Experiment(tmp_path, "x")
    with pytest.raises(RuntimeError):
        with experiment.creating() as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_cli_user_errors_are_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    result = run_cli("--experiment-name", "nope", "info", cwd=tmp_path)
    assert_one_line_error(result, "no such experiment")

    result = run_cli("--experiment-name", "x", "init", "--config-path", "missing.json", cwd=tmp_path)
    assert_one_line_error(result, "missing.json", "not found")

    bad = json.loads((ROOT / "config.default.json").read_text())
    bad["training"]["learning_rate"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = run_cli("--experiment-name", "x", "init", "--config-path", "bad.json", cwd=tmp_path)
    assert_one_line_error(result, "bad.json", "training.learning_rate")

    (tmp_path / "broken.json").write_text("{\"model\": ")
    result = run_cli("--experiment-name", "x", "init", "--config-path", "broken.json", cwd=tmp_path)
    assert_one_line_error(result, "broken.json", "invalid JSON")

    folder = json.loads((ROOT / "config.default.json").read_text())
    folder["data"]["corpora"] = [{"type": "folder", "path": "speakers"}]   # not built by init
    (tmp_path / "folder.json").write_text(json.dumps(folder))
    result = run_cli("--experiment-name", "x", "--data-path", "absent", "init", "--config-path",
                     "folder.json", cwd=tmp_path)
    assert_one_line_error(result, "absent", "data folder not found")
    assert not (tmp_path / "absent").exists()
    # None of the failures left an experiment (or a staging folder) behind.
    assert not (tmp_path / "experiments").exists() or list((tmp_path / "experiments").iterdir()) == []


def test_config_reference_in_docs_is_current():
    """docs/config.md is generated from the schema; regenerate it when a field changes."""
    result = subprocess.run([sys.executable, "-m", "samplernn_pase.experiment.config"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    documented = (ROOT / "docs" / "config.md").read_text()
    assert result.stdout == documented, \
        "run: python -m samplernn_pase.experiment.config > docs/config.md (and keep the header)"

"""Shared fixtures: the real demo corpus, built once per test session."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from samplernn_pase.data.prepare import prepare_data
from samplernn_pase.experiment.config import fill_defaults, load_schema


@pytest.fixture
def one_thread():
    """Model tests of tiny ops: one intra-op thread is faster, and steady on a busy shared
    machine (a module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data_config(**overrides) -> dict:
    """The `data` section with every default filled in, as `init` passes it."""
    return fill_defaults(load_schema("data"), dict(overrides))


@pytest.fixture(scope="session")
def make_data_config():
    """data_config(**overrides): the data section with defaults filled in."""
    return data_config


@pytest.fixture(scope="session")
def demo_data_path(tmp_path_factory) -> Path:
    """A --data-path holding the default demo corpus (built once) at demo/."""
    data_path = tmp_path_factory.mktemp("demo_data")
    from samplernn_pase.data.demo_corpus import build_demo_corpus

    config = data_config()
    build_demo_corpus(data_path / "demo", config["demo"]["num_speakers"], config["demo"]["sentences_per_speaker"],
                      config["sample_rate"])
    return data_path


@pytest.fixture(scope="session")
def demo_corpus_path(demo_data_path) -> Path:
    return demo_data_path / "demo"


@pytest.fixture(scope="session")
def demo_prepared(demo_data_path):
    """(data_index, normalization, data_path) of prepare_data on the demo corpus with defaults."""
    index, normalization = prepare_data(data_config(), demo_data_path, seed=0, num_workers=2,
                                        log=logging.getLogger("test"))
    return index, normalization, demo_data_path


@pytest.fixture
def copy_demo_files(demo_corpus_path):
    """copy(speaker, numbers, destination_folder, stem_format, with_labels) -> copied wav paths."""
    def copy(speaker: str, numbers, destination: Path, stem_format: str = "{speaker}_{number:03d}",
             with_labels: bool = True) -> list[Path]:
        destination.mkdir(parents=True, exist_ok=True)
        copied = []
        for number in numbers:
            source = demo_corpus_path / speaker / f"{speaker}_{number:03d}"
            stem = stem_format.format(speaker=speaker, number=number)
            shutil.copy(source.with_suffix(".wav"), destination / f"{stem}.wav")
            if with_labels:
                shutil.copy(source.with_suffix(".lab"), destination / f"{stem}.lab")
            copied.append(destination / f"{stem}.wav")
        return copied
    return copy


def state_level_lines(phone_lines: list[str], states=range(2, 7)) -> list[str]:
    """A phone-level HTS label file as a state alignment writes it: each phone on one
    line per HMM state, the context followed by `[2]` .. `[6]`, its time split evenly."""
    result = []
    for line in phone_lines:
        if not line.strip():
            continue
        start, end, context = line.split()
        bounds = np.linspace(int(start), int(end), len(states) + 1).round().astype(int)
        result += [f"{a} {b} {context}[{state}]" for state, a, b in zip(states, bounds, bounds[1:])]
    return result


@pytest.fixture(scope="session")
def to_state_level():
    """state_level_lines(phone_lines) -> the lines of the state-level file."""
    return state_level_lines


def pytest_configure(config):
    """Under two pytest-xdist workers on a 2-core machine, one intra-op thread per worker: two
    workers of two threads each would oversubscribe the cores (CLI subprocesses of the tests
    already run with OMP_NUM_THREADS=1)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)

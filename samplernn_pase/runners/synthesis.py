"""Rendering from a trained experiment outside training, shared by the `synthesize` command
(cli.py) and the Python API (api.py): the trained runner, the data.json record of new input
(a features file, text), and the rendering itself, which is the test's (`Runner.render_test`).
One implementation: the command writes and judges what it renders (`Runner.test`), the API
returns the audio and writes nothing.
"""

import contextlib
import logging
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..experiment.weights import load_weights
from ..training.distributed import Distributed
from ..training.rng import seed_everything
from . import runner_class
from .base import RunContext, Runner
from .rendering import RenderedItem, as_written

LOGGER_NAME = "samplernn_pase"
#: The kinds of new input, as `synthesize` options (--text, --espeak-text, --features) and
#: as the API's keyword arguments (text=, espeak_text=, features=).
NEW_INPUTS = ("text", "espeak_text", "features")


def make_runner(experiment, data_path: Path, device, dist=None, num_workers: int = 0,
                from_release: bool = False) -> Runner:
    """The experiment's runner (model built, seeded) on `device`, a torch.device."""
    config = experiment.config()
    dist = dist or Distributed()
    seed_everything(config["seed"] + dist.rank)
    context = RunContext(experiment=experiment, config=config, data_path=Path(data_path),
                         device=device, rank=dist.rank, world_size=dist.world_size,
                         num_workers=num_workers, log=logging.getLogger(LOGGER_NAME),
                         from_release=from_release)
    return runner_class(config["model"]["type"])(context)


def trained_runner(experiment, epoch: int, data_path: Path, device, from_release: bool = False) -> Runner:
    """The runner of `make_runner` with the weights of the epoch's checkpoint (test,
    test_sample, synthesize, the API)."""
    runner = make_runner(experiment, data_path, device, from_release=from_release)
    load_weights(runner.model, experiment, epoch, runner.device)
    return runner


def option_name(name: str) -> str:
    """How the command line spells an input: `espeak_text` -> `--espeak-text`."""
    return f"--{name.replace('_', '-')}"


def new_input_record(experiment, kind: str, value, speaker: str | None, folder: Path,
                     spell=option_name) -> dict:
    """The data.json record of new input (data/synthesis_input.py): `kind` "text" is
    text-to-speech, through an acoustic experiment; "espeak_text" re-vocodes eSpeak NG's own
    reading through a SampleRNN experiment; "features" a features file, through either.
    `spell` names an input in the error messages (the option, or the API's argument)."""
    from ..data.synthesis_input import features_file_record, text_record
    option = spell(kind)
    if speaker is None:
        raise UserError(f"{option}: give the speaker with {spell('speaker')} NAME (see `info`)")
    config, index = experiment.config(), experiment.data_index()
    model_type = config["model"]["type"]
    if model_type not in ("samplernn", "acoustic"):
        raise UserError(f"{option}: only SampleRNN and acoustic experiments render from features or "
                        f"text; this is a {model_type} experiment (use {spell('utterance')})")
    if kind == "text" and model_type != "acoustic":
        raise UserError(f"{option}: text-to-speech needs an acoustic experiment (model.type \"acoustic\"); "
                        f"{spell('espeak_text')} re-vocodes eSpeak NG's own reading through this SampleRNN "
                        "experiment")
    if kind == "espeak_text" and model_type != "samplernn":
        raise UserError(f"{option}: re-vocoding eSpeak NG's reading needs a SampleRNN experiment; "
                        f"an acoustic experiment speaks text with {spell('text')}")
    if kind != "features":
        return text_record(value, speaker, index, config["data"], folder, option)
    # An acoustic experiment reads the phone-level labels of the file.
    return features_file_record(value, speaker, index, config["model"].get("conditioning", "linguistic"))


def check_utterance(experiment, utterance: str, where, spell=option_name) -> None:
    """An utterance to render: one of data.json's (of the release's, for a release)."""
    ids = [u["id"] for u in experiment.data_index()["utterances"]]
    if utterance not in ids:
        raise UserError(f"{spell('utterance')} {utterance}: not in {where} (it has: "
                        f"{' '.join(ids[:20])}{' ...' if len(ids) > 20 else ''})")


@contextlib.contextmanager
def new_inputs(runner: Runner, records: list[dict]):
    """The records of new input in the runner's store for the block, rendered whole (not cut
    to test.max_seconds as the test renders are) by the test's code. bench/text_to_speech.py
    renders its sentences so, batched as the test is."""
    if not records:
        yield
        return
    config = runner.config
    runner.config = {**config, "test": {**config["test"], "max_seconds": None}}
    try:
        for record in records:
            runner.store.add(record)
        yield
    finally:
        runner.config = config
        for record in records:
            runner.store.remove(record["id"])


def rendered_audio(rendered: list, utterance_id: str) -> np.ndarray | None:
    """The audio of the rendering of one utterance as `synthesize` writes it to
    `<utterance>.wav` (float32, clipped to [-1, 1]); None when the family renders none."""
    items = [item for entry in rendered for item in (entry if isinstance(entry, list) else [entry])]
    items = [RenderedItem.of(item) for item in items
             if isinstance(item, RenderedItem) or (isinstance(item, dict) and "audio" in item)]
    for item in sorted(items, key=lambda item: item.id != utterance_id):   # its own id first
        if utterance_id in (item.id, item.utterance):
            return as_written(item.audio)
    return None

"""The Python API: load a trained experiment or a release, synthesize arrays.

    from samplernn_pase import load
    voice = load("experiments/tts/checkpoints/9.checkpoint.release.pt")   # or an experiment folder
    voice.speakers                                   # ids of the speakers it voices
    audio, rate = voice.synthesize(text="Hello there.", speaker="demo_f1", seed=0)

It renders with the code of the `synthesize` command (runners/synthesis.py and the runner's
`render_test`), so the same input and seed give the same samples as `synthesize ... --seed`;
unlike the command it writes nothing (no wav, no metrics.json, no log) and judges nothing.
A release is unpacked into a temporary folder that lives as long as the object; text goes
through eSpeak NG in a temporary folder of its own.
"""

import itertools
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError
from .experiment.folder import Experiment
from .experiment.release import load_release, unpack_release
from .runners.synthesis import (NEW_INPUTS, check_utterance, new_input_record, new_inputs, rendered_audio,
                                trained_runner)
from .training.distributed import parse_device


def argument_name(name: str) -> str:
    """How the API spells an input in error messages: `text` -> `text=`."""
    return f"{name}="


class Voice:
    """A trained model ready to render: `speakers`, `utterances`, `sample_rate`, `synthesize`."""

    def __init__(self, experiment: Experiment, epoch: int, data_path: Path, device: str,
                 source: str, unpacked: tempfile.TemporaryDirectory | None = None):
        self._unpacked = unpacked      # a release's folder: removed with the object
        self.experiment, self.epoch, self.source = experiment, epoch, source
        self.runner = trained_runner(experiment, epoch, data_path, parse_device(device),
                                     from_release=unpacked is not None)
        self.model_type = self.runner.config["model"]["type"]
        self._calls = itertools.count()

    @property
    def speakers(self) -> list[str]:
        """Ids of the speakers the model voices (a learned speaker table: the modeling ones)."""
        return self.runner.voiced_speakers()

    @property
    def utterances(self) -> list[str]:
        """Test utterances of those speakers that `synthesize(utterance=...)` takes (a release
        holds the experiment's fixed test utterances)."""
        voiced = set(self.speakers)
        return [u["id"] for u in self.runner.index["utterances"] if u["split"] == "test" and u["speaker"] in voiced]

    @property
    def sample_rate(self) -> int:
        return int(self.runner.index["sample_rate"])

    def synthesize(self, text: str | None = None, speaker: str | None = None, *, utterance: str | None = None,
                   features=None, espeak_text: str | None = None, seed: int | None = None) -> tuple[np.ndarray, int]:
        """(float32 audio in [-1, 1], sample rate) of one input, what `synthesize` writes as its wav:
        `text` (acoustic experiments: text to speech), `espeak_text` (SampleRNN: eSpeak NG's
        reading re-vocoded) or `features` (an .npz as `init` writes per utterance), each with a
        `speaker`; or `utterance`, a test utterance id (any family that renders audio).
        `seed`: of the rendering's random draws, as `synthesize --seed` (None: the experiment's
        seed, as `test` and `synthesize` without --seed render)."""
        given = {name: value for name, value in (("text", text), ("espeak_text", espeak_text),
                                                 ("features", features), ("utterance", utterance))
                 if value is not None}
        if len(given) != 1:
            raise UserError("synthesize: give one of text=, espeak_text=, features= or utterance= "
                            f"(got {', '.join(f'{name}=' for name in given) or 'none'})")
        (kind, value), = given.items()
        self.runner.render_seed = seed
        with tempfile.TemporaryDirectory(prefix="samplernn_pase-api-") as folder:
            records = []
            if kind == "utterance":
                if speaker is not None:
                    raise UserError("speaker=: only with text=, espeak_text= or features= (an utterance "
                                    "has its speaker)")
                check_utterance(self.experiment, utterance, self.source, argument_name)
                target = utterance
            else:
                record = new_input_record(self.experiment, kind, value, speaker, Path(folder), argument_name)
                # An id of its own: nothing a previous call cached is taken for this input.
                target = f"{record['id']}@{next(self._calls)}"
                records = [{**record, "id": target}]
            with new_inputs(self.runner, records):
                rendered = self.runner.render_test(self.epoch, [target])
        audio = rendered_audio(rendered, target)
        if audio is None:
            raise UserError(f"utterance=: a {self.model_type} experiment renders no audio of an utterance "
                            "(its test judges what it computes, e.g. PASE's speaker seeds)")
        return audio, self.sample_rate


def load(path, epoch: int | None = None, data_path="data", device: str = "cpu") -> Voice:
    """A trained model from a release file (`create_release`'s `<N>.checkpoint.release.pt`, which
    renders on its own) or an experiment folder (`epoch`: its checkpoint, default the latest;
    `data_path`: the --data-path its features are under). `device`: cpu, cuda or cuda:K."""
    path = Path(path)
    if path.is_file():
        if epoch is not None:
            raise UserError(f"epoch={epoch}: a release holds one epoch ({path})")
        release = load_release(path)
        unpacked = tempfile.TemporaryDirectory(prefix="samplernn_pase-release-")
        experiment = unpack_release(release, Path(unpacked.name))
        return Voice(experiment, release["epoch"], Path(data_path), device, str(path), unpacked)
    if not path.is_dir():
        raise UserError(f"load: {path}: neither a release file nor an experiment folder")
    experiment = Experiment(path.parent, path.name)
    experiment.require()
    return Voice(experiment, experiment.resolve_epoch(epoch), Path(data_path), device,
                 str(experiment.data_index_path))

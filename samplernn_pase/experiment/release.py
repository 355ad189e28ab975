"""A release: one file that renders speech without the experiment folder.

`create_release` writes `checkpoints/<N>.checkpoint.release.pt`, a `torch.save`
file of plain containers and tensors (loadable with `weights_only=True`):

    format, package_version, epoch, config      as in a checkpoint
    model                                       the weights
    data          data.json of the experiment, its utterance list cut down to the
                  test utterances whose features are embedded (below)
    normalization normalization.npz as {name: tensor}, `speakers` as a list of ids
    files         other arrays the runner reads from the folder ({file name: {name: tensor}},
                  e.g. speaker_seeds.npz of PASE-conditioned SampleRNN)
    features      {utterance id: {name: tensor}}: the feature-cache entries (conditioning
                  and reference audio) of the experiment's fixed test utterances
    vocoder       an acoustic experiment's only: the release of the SampleRNN experiment
                  its model.vocoder_experiment names (at model.vocoder_epoch), without
                  features, so that the release renders speech on its own

What synthesis needs: weights, config, speaker ids and their rows (data.speakers:
`index` is the row, `set` says whether training ever saw it), label
vocabularies (data.linguistic), normalization, and conditioning to render.
`unpack_release` turns it back into an experiment folder (in a temporary
place), so that synthesis from a release runs the same code as from a checkpoint.
"""

from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data import cache
from ..errors import UserError
from .folder import Experiment, atomic_save_npz, atomic_torch_save, atomic_write_json, torch_load
from .weights import checkpoint_weights, named_experiment

RELEASE_FORMAT = 2
#: Files of the experiment folder (besides config, data, normalization) a runner may read.
EXTRA_FILES = ("speaker_seeds.npz",)
#: Where unpack_release puts a release's vocoder: <into>/vocoder/release, beside <into>/release.
VOCODER_FOLDER = "vocoder"


def _tensors(arrays: dict) -> dict:
    """npz arrays -> tensors, string arrays -> lists (both load with weights_only=True)."""
    converted = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        converted[name] = array.tolist() if array.dtype.kind in "US" else torch.from_numpy(array.copy())
    return converted


def _arrays(values: dict) -> dict:
    return {name: np.asarray(value) if isinstance(value, list) else value.numpy()
            for name, value in values.items()}


def build_release(experiment: Experiment, epoch: int, data_path: Path, utterance_ids: list[str]) -> dict:
    index = experiment.data_index()
    chosen = set(utterance_ids)
    features = {}
    for utterance in index["utterances"]:
        if utterance["id"] in chosen:
            try:
                features[utterance["id"]] = _tensors(cache.load_entry(data_path, utterance["features"]))
            except FileNotFoundError:
                raise UserError(f"{Path(data_path) / utterance['features']}: features of "
                                f"{utterance['id']} are missing (wrong --data-path?)") from None
    data = {**index, "utterances": [u for u in index["utterances"] if u["id"] in features]}
    files = {}
    for name in EXTRA_FILES:
        if (experiment.root / name).is_file():
            with np.load(experiment.root / name, allow_pickle=False) as npz:
                files[name] = _tensors({key: npz[key] for key in npz.files})
    release = {"format": RELEASE_FORMAT, "package_version": __version__, "epoch": epoch,
               "config": experiment.config(), "model": checkpoint_weights(experiment, epoch), "data": data,
               "normalization": _tensors(experiment.normalization()), "files": files,
               "features": features}
    model = release["config"]["model"]
    if model.get("vocoder_experiment") is not None:
        vocoder, _, vocoder_epoch = named_experiment(experiment.root.parent, model["vocoder_experiment"],
                                                     model.get("vocoder_epoch"), "samplernn",
                                                     "model.vocoder_experiment")
        release["vocoder"] = build_release(vocoder, vocoder_epoch, data_path, [])
    return release


def load_release(path: Path) -> dict:
    if not Path(path).is_file():
        raise UserError(f"--release {path}: no such file")
    release = torch_load(path)
    if not isinstance(release, dict) or release.get("format") != RELEASE_FORMAT:
        raise UserError(f"--release {path}: not a release of this version (format "
                        f"{release.get('format') if isinstance(release, dict) else '?'}, expected "
                        f"{RELEASE_FORMAT}; run create_release again)")
    return release


def unpack_release(release: dict, into: Path) -> Experiment:
    """Write the release as an experiment folder `into/release` with one checkpoint;
    the embedded features go to `into/features` and data.json points at them."""
    experiment = Experiment(into, "release")
    root = experiment.root
    feature_dir = Path(into) / "features"
    data = dict(release["data"])
    utterances = []
    for utterance in data["utterances"]:
        path = feature_dir / f"{len(utterances)}.npz"
        atomic_save_npz(path, _arrays(release["features"][utterance["id"]]))
        utterances.append({**utterance, "features": str(path.resolve())})
    data["utterances"] = utterances
    atomic_write_json(experiment.config_path, release["config"])
    atomic_write_json(experiment.data_index_path, data)
    atomic_save_npz(experiment.normalization_path, _arrays(release["normalization"]))
    for name, arrays in release["files"].items():
        atomic_save_npz(root / name, _arrays(arrays))
    atomic_torch_save(experiment.checkpoint_path(release["epoch"]), {"model": release["model"]})
    if "vocoder" in release:
        unpack_release(release["vocoder"], Path(into) / VOCODER_FOLDER)
    return experiment

"""PASE speaker seeds: a speaker's voice as the mean PASE embedding of a few seconds of it.

`init` of a SampleRNN experiment with `conds_speaker_type: "pase"` writes the
seed of every speaker into speaker_seeds.npz with the PASE encoder of the
experiment the config names; the SampleRNN runner reads them as its speaker
vectors, and the PASE runner's test computes the same train seeds to judge
how well seeds tell speakers apart. The trained encoder comes from
experiment/weights.py `load_pase` (the experiment floor reads checkpoints).
"""

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..models.pase import PASE, speaker_seed
from .store import UtteranceStore

SEEDS_FILE = "speaker_seeds.npz"


def speaker_train_seeds(model: PASE, index: dict, load_audio, speakers, seconds: float) -> dict:
    """speaker -> seed from its train split (utterances sorted by id): what `init` gives SampleRNN.

    `load_audio(utterance_id)` returns the utterance's audio at index["sample_rate"].
    """
    seeds = {}
    for speaker in speakers:
        ids = sorted(u["id"] for u in index["utterances"] if u["speaker"] == speaker and u["split"] == "train")
        if ids:
            seeds[speaker] = speaker_seed(model, [load_audio(i) for i in ids], seconds, index["sample_rate"])
    return seeds


def compute_speaker_seeds(model: PASE, model_config: dict, data_index: dict, normalization: dict,
                          data_path: Path, log) -> dict:
    """The arrays of speaker_seeds.npz: the seed of every speaker, in speaker-index order.

    A seed is the mean of PASE frames (of `model`, the encoder of the experiment
    `model_config` names) over the first `pase_seed_seconds` of the speaker's
    training audio (utterances sorted by id), for modeling and adaptation
    speakers alike, so that unseen speakers can be rendered.
    """
    store = UtteranceStore(data_index, normalization, data_path)
    seconds = model_config["pase_seed_seconds"]
    speakers = sorted(data_index["speakers"], key=lambda s: s["index"])   # rows = speaker indices
    by_speaker = speaker_train_seeds(model, data_index, lambda i: store.load(i).audio,
                                     [s["id"] for s in speakers], seconds)
    for speaker in speakers:
        if speaker["id"] not in by_speaker:
            raise UserError(f"speaker {speaker['id']}: no training audio to compute a PASE seed")
    seeds = [by_speaker[s["id"]] for s in speakers]
    log.info("PASE seeds of %d speakers from %s (%.1f s each)", len(seeds),
             model_config["pase_experiment"], seconds)
    return {"speakers": np.array([s["id"] for s in speakers]),
            "seeds": np.stack(seeds).astype(np.float32),
            "seed_seconds": np.array(seconds, dtype=np.float32)}


def read_speaker_seeds(experiment_root: Path) -> torch.Tensor:
    """(speakers, D) float32: the seeds `init` wrote, row = speaker index."""
    with np.load(Path(experiment_root) / SEEDS_FILE, allow_pickle=False) as seeds:
        return torch.from_numpy(seeds["seeds"].astype(np.float32))

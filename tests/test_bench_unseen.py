"""bench/unseen_speakers.py's voice from a seed: the statistics of the seed's first seconds,
against the features as `init` cached them, computed here with NumPy."""

import importlib.util
from pathlib import Path

import numpy as np

from samplernn_pase.data import cache
from samplernn_pase.data.store import UtteranceStore

SPEC = importlib.util.spec_from_file_location(
    "unseen_speakers", Path(__file__).resolve().parents[1] / "bench" / "unseen_speakers.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_seed_statistics_are_those_of_the_first_seconds_of_the_sorted_training_audio(demo_prepared):
    index, normalization, data_path = demo_prepared
    store = UtteranceStore(index, normalization, data_path)
    speaker = next(s["id"] for s in index["speakers"] if s["set"] == "adaptation")
    ids = bench.seed_pool(index, speaker)
    records = {u["id"]: u for u in index["utterances"]}
    assert ids == sorted(ids) and all(records[i]["speaker"] == speaker and records[i]["split"] == "train"
                                      for i in ids)
    seconds = 3.0
    frames = int(round(seconds * index["sample_rate"] / index["hop_length"]))
    raw = np.concatenate([cache.load_entry(data_path, records[i]["features"])["acoustic"] for i in ids])[:frames]
    assert len(raw) == frames          # the speaker has more than 3 s of training audio
    statistics = bench.seed_statistics(store, ids, seconds)
    fields = index["acoustic_fields"]
    flags = [fields.index("vuv")]
    continuous = [k for k in range(len(fields)) if k not in flags]
    std = raw.std(axis=0)
    np.testing.assert_allclose(statistics["acoustic_mean"][continuous], raw.mean(axis=0)[continuous],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(statistics["acoustic_std"][continuous], std[continuous], rtol=1e-3, atol=1e-4)
    assert statistics["acoustic_mean"][flags].tolist() == [0.0] and statistics["acoustic_std"][flags].tolist() == [1.0]
    assert statistics["seconds"] == frames * index["hop_length"] / index["sample_rate"]
    # not what init computed from all of the speaker's training audio
    row = store.speakers[speaker]["index"]
    assert not np.allclose(statistics["acoustic_mean"], store.acoustic_mean[row], atol=1e-3)

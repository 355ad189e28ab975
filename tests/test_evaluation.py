"""The test's judges over one runner's life: new input added to the index between tests is
judged against its speaker and words, and a reference row whose audio changed (the acoustic
family's WORLD rendering of its predictions, every epoch) is judged again, not remembered."""

import copy

import numpy as np

from conftest import data_config
from samplernn_pase.data.store import UtteranceStore
from samplernn_pase.metrics.evaluation import Evaluation


def test_added_input_is_judged_and_a_changed_reference_row_is_judged_again(demo_prepared):
    index, normalization, data_path = demo_prepared
    index = copy.deepcopy(index)
    store = UtteranceStore(index, normalization, data_path)
    evaluation = Evaluation(index, store, data_config())
    utterance = next(u for u in index["utterances"] if u["split"] == "test")
    audio = store.load(utterance["id"]).audio
    evaluation.judge(audio, utterance["id"])                 # the evaluation is in use before the input comes
    new = {**utterance, "id": "new_input"}
    store.add(new)
    scores = evaluation.judge(audio, "new_input", words=utterance["text"])
    assert scores["speaker_similarity_own"] is not None and scores["speaker_identified"] == 1.0
    assert scores["wer"] is not None and scores["wer"] <= 0.5
    assert evaluation.spoken_words("new_input", len(audio)) is not None
    store.remove("new_input")
    assert evaluation.judge(audio, "new_input")["speaker_similarity_own"] is None
    # same row, utterance, length and words; other audio: judged again
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, len(audio)).astype(np.float32)
    first = evaluation.judge_reference("world_predicted", audio, utterance["id"])
    second = evaluation.judge_reference("world_predicted", noise, utterance["id"])
    assert second["dnsmos_ovrl"] < first["dnsmos_ovrl"] and second["speaker_similarity_own"] < first["speaker_similarity_own"]
    assert evaluation.judge_reference("world_predicted", audio.copy(), utterance["id"]) is first

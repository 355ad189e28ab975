"""The real demo corpus and prepare_data on it."""

import csv
import json
import logging
import re
import time

import numpy as np
import pytest
import soundfile

from samplernn_pase.data import cache, features, hts_labels
from samplernn_pase.data.demo_corpus import SENTENCES_FILE, build_demo_corpus, read_sentences, speaker_sentences
from samplernn_pase.data.prepare import prepare_data
from samplernn_pase.data.store import UtteranceStore

LOG = logging.getLogger("test")


def test_demo_corpus_layout(demo_corpus_path):
    with open(demo_corpus_path / "speakers.csv") as file:
        genders = {row["id"]: row["gender"] for row in csv.DictReader(file)}
    assert len(genders) >= 8 and set(genders.values()) == {"f", "m"}
    for speaker in genders:
        wavs = sorted((demo_corpus_path / speaker).glob("*.wav"))
        assert len(wavs) >= 20
        audio, rate = soundfile.read(wavs[0])
        assert rate == 16000 and audio.ndim == 1 and np.abs(audio).max() > 0.05
        labels = hts_labels.read_labels(wavs[0].with_suffix(".lab"))
        assert labels.duration == pytest.approx(len(audio) / rate, abs=1e-3)
        assert labels.categorical[-1, 2] == "sil" and "content" in labels.categorical[:, 7]
        stressed = labels.real[:, hts_labels.LABEL_REAL_FIELDS.index("b1")]
        assert stressed.max() == 1  # some syllable is stressed
        check_with_questions(wavs[0].with_suffix(".lab").read_text().splitlines())
    assert not list(demo_corpus_path.parent.glob(".demo.building-*"))  # no half-built corpus left


# Numeric questions in the style of Merlin's questions-radio_dnn_416.hed: each field found by
# the separators around it in a real label line, independently of the parser.
QUESTIONS = {"p6": r"@(\d+)_", "a3": r"_(\d+)/B:", "b1": r"/B:(\d+)-", "c3": r"\+(\d+)/D:",
             "d2": r"_(\d+)/E:", "f2": r"_(\d+)/G:", "g1": r"/G:(\d+)_", "g2": r"_(\d+)/H:",
             "h1": r"/H:(\d+)=", "h3": r"@(\d+)=", "i1": r"/I:(\d+)=", "i2": r"=(\d+)/J:",
             "j1": r"/J:(\d+)\+", "j3": r"-(\d+)$", "h5": r"\|([^/|]+)/I:", "e1": r"/E:([^+/]+)\+",
             "f1": r"/F:([^_/]+)_"}


def check_with_questions(lines):
    """Every demo line reads the same through the questions as through the parser; pauses
    carry Festival's values (x for the current syllable, 0 for its tone)."""
    for line in lines:
        context = line.split()[2]
        fields, _ = hts_labels.parse_context(context)
        for name, question in QUESTIONS.items():
            match = re.search(question, context)
            if fields[name] in ("x",):
                assert match is None or match.group(1) == "x", (name, context)
            else:
                assert match is not None and match.group(1) == fields[name], (name, context)
        if fields["p3"] in ("sil", "pau"):
            assert fields["b1"] == fields["p6"] == fields["e1"] == fields["h1"] == "x" and fields["h5"] == "0"
        else:
            assert fields["h5"] in ("L-L%", "L-H%", "H-H%") and fields["b16"] != "x"
    first, _ = hts_labels.parse_context(lines[0].split()[2])
    assert first["a1"] == first["a3"] == first["d1"] == first["g1"] == "0" and first["p1"] == "x"


def test_demo_labels_read_by_the_questions(demo_corpus_path):
    for speaker in ("f1", "m2"):
        for path in sorted((demo_corpus_path / speaker).glob("*.lab"))[:5]:
            check_with_questions(path.read_text().splitlines())


def test_demo_corpus_is_deterministic(tmp_path):
    """Two builds a second apart give the same bytes; the third speaker (eSpeak's f2 variant)
    has `breath`, noise from eSpeak's own generator, which is seeded from the clock unless set."""
    build_demo_corpus(tmp_path / "a", 3, 2, 16000)
    time.sleep(1.1)
    build_demo_corpus(tmp_path / "b", 3, 2, 16000)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 2 * 3 + 1
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    assert [p.name for p in tmp_path.iterdir()] and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_more_sentences_spread_the_speakers_over_401_texts_none_held_out(tmp_path):
    heldout = {line.strip() for line in (SENTENCES_FILE.parent / "sentences_heldout.txt")
               .read_text().splitlines() if line.strip()}
    harvard, pool = read_sentences(), read_sentences(more=True)
    assert len(harvard) == 50 and len(pool) == 401 and pool[:50] == harvard and len(set(pool)) == 401
    assert not heldout & set(pool)
    # the 8 speakers of configs/acoustic_more_text.json, 100 sentences each: every text, twice
    read = [speaker_sentences(k, 100, pool, True, 8) for k in range(8)]
    assert len({text for texts in read for text in texts}) == 401
    assert max(sum(text in texts for texts in read) for text in pool) == 2
    # neighbours share half of their texts: the first 6 speakers read 350 different ones
    assert len({text for texts in read[:6] for text in texts}) == 350
    assert len({text for k in range(6) for text in speaker_sentences(k, 50, harvard, False, 8)}) == 50
    # the default corpus reads what it always read: speaker k from Harvard sentence 7 k
    assert speaker_sentences(3, 20, harvard, False, 8) == [harvard[(21 + j) % 50] for j in range(20)]
    # and the built corpus says them: of 2 speakers, the second's first utterance is sentence 201
    build_demo_corpus(tmp_path / "more", 2, 1, 16000, more_sentences=True)
    assert (tmp_path / "more" / "m1" / "m1_001.txt").read_text().strip() == pool[200]


def test_prepare_demo_index(demo_prepared):
    index, normalization, data_path = demo_prepared
    json.dumps(index)  # JSON-serializable as data.json
    assert index["sample_rate"] == 16000 and index["hop_length"] == 80
    assert len(index["acoustic_fields"]) == 43 and index["acoustic_fields"][:2] == ["lf0", "vuv"]
    speakers = index["speakers"]
    modeling = [s for s in speakers if s["set"] == "modeling"]
    adaptation = [s for s in speakers if s["set"] == "adaptation"]
    assert sorted(s["gender"] for s in modeling) == ["f", "f", "f", "m", "m", "m"]
    assert sorted(s["gender"] for s in adaptation) == ["f", "m"]
    assert [s["index"] for s in speakers] == list(range(8))
    # Longest-recorded first: every modeling speaker has at least the seconds of the adaptation one of its gender.
    for gender in "fm":
        assert min(s["seconds"] for s in modeling if s["gender"] == gender) >= \
            max(s["seconds"] for s in adaptation if s["gender"] == gender)
    assert index["report"]["kept"] == 160 and index["report"]["dropped"] == {}
    for speaker in speakers:
        own = [u for u in index["utterances"] if u["speaker"] == speaker["id"]]
        splits = {split: sum(u["seconds"] for u in own if u["split"] == split) for split in ("test", "validation")}
        assert 4.0 <= splits["test"] < 8.0 and 4.0 <= splits["validation"] < 8.0
        assert any(u["split"] == "train" for u in own)
    for utterance in index["utterances"]:
        assert utterance["has_labels"]
        assert utterance["num_frames"] == int(round(utterance["seconds"] * 16000)) // 80
        assert (data_path / utterance["audio"]).exists() and (data_path / utterance["features"]).exists()
    vocabularies = index["linguistic"]["vocabularies"]
    assert list(vocabularies) == ["phoneme", "vowel", "pos", "tobi"]
    assert all(v[:2] == ["x", "<unknown>"] and len(set(v)) == len(v) for v in vocabularies.values())
    assert "sil" in vocabularies["phoneme"] and "content" in vocabularies["pos"] and "0" in vocabularies["pos"]
    assert {"0", "L-L%", "L-H%"} <= set(vocabularies["tobi"]) and "novowel" not in vocabularies["phoneme"]
    assert len(index["linguistic"]["real_fields"]) == 45 and len(index["linguistic"]["columns"]) == 55
    assert normalization["acoustic_mean"].shape == (8, 43)
    assert normalization["linguistic_real_std"].shape == (8, 45)
    assert normalization["speakers"].dtype.kind == "U"


def test_store_normalized_training_frames(demo_prepared):
    index, normalization, data_path = demo_prepared
    store = UtteranceStore(index, normalization, data_path)
    assert store.acoustic_dim == 43 and store.linguistic_real_dim == 45 and store.num_speakers == 8
    assert store.linguistic_table_sizes == [len(v) for v in index["linguistic"]["vocabularies"].values()]
    assert store.linguistic_column_tables == [0, 0, 0, 0, 0, 1, 2, 2, 2, 3]
    kept_as_is = [hts_labels.FRAME_REAL_FIELDS.index(f) for f in hts_labels.UNNORMALIZED_FIELDS]
    vuv = index["acoustic_fields"].index("vuv")
    for speaker in index["speakers"]:
        ids = [u["id"] for u in index["utterances"] if u["speaker"] == speaker["id"] and u["split"] == "train"]
        loaded = [store.load(i) for i in ids]
        acoustic = np.concatenate([u.acoustic for u in loaded])
        real = np.concatenate([u.linguistic_real for u in loaded])
        assert set(np.unique(acoustic[:, vuv])) == {0.0, 1.0}  # flag left as it is
        others = [d for d in range(43) if d != vuv]
        np.testing.assert_allclose(acoustic[:, others].mean(0), 0, atol=1e-3)
        np.testing.assert_allclose(acoustic[:, others].std(0), 1, atol=1e-3)
        assert real[:, kept_as_is].min() >= 0 and real[:, kept_as_is].max() <= 1  # position and flags
        assert set(np.unique(real[:, hts_labels.FRAME_REAL_FIELDS.index("b1")])) == {0.0, 1.0}
        varying = real.std(0) > 1e-6  # dimensions constant for this speaker normalize to 0
        varying[kept_as_is] = False
        np.testing.assert_allclose(real[:, varying].mean(0), 0, atol=1e-3)
        np.testing.assert_allclose(real[:, varying].std(0), 1, atol=1e-3)
        assert varying.sum() > 20 and varying[hts_labels.FRAME_REAL_FIELDS.index("phone_duration")]
    u = store.load(store.ids("test", "adaptation")[0])
    assert u.audio.dtype == np.float32 and len(u.audio) == u.num_frames * 80
    assert u.linguistic_categorical.dtype == np.int64 and u.linguistic_categorical.shape == (u.num_frames, 10)
    sizes = np.array(store.linguistic_table_sizes)[store.linguistic_column_tables]
    assert (u.linguistic_categorical < sizes).all() and (u.linguistic_categorical != 1).all()  # none unknown
    assert u.speaker_index == store.speakers[store.utterances[u.id]["speaker"]]["index"]
    assert index["speakers"][u.speaker_index]["set"] == "adaptation"
    assert store.load(u.id) is u  # in-memory cache
    # un-normalized, the features are those the extraction cached (the vocoder's predictor reads them)
    extracted = cache.load_entry(data_path, store.utterances[u.id]["features"])["acoustic"]
    np.testing.assert_allclose(store.raw_acoustic(u), extracted, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError):
        u.acoustic[0, 0] = 1.0  # read-only: shared between callers


def test_unknown_symbols_map_to_the_reserved_unknown_not_to_x(demo_prepared):
    index, normalization, data_path = demo_prepared
    index = json.loads(json.dumps(index))
    vocabulary = index["linguistic"]["vocabularies"]["phoneme"]
    index["linguistic"]["vocabularies"]["phoneme"] = [s for s in vocabulary if s != "sil"]  # as if unseen
    store = UtteranceStore(index, normalization, data_path)
    u = store.load(index["utterances"][0]["id"])
    unknown = vocabulary.index("<unknown>")
    assert unknown == 1 and vocabulary[0] == "x"
    assert u.linguistic_categorical[0, 2] == unknown  # p3 of the first frame: silence, now unknown
    assert u.linguistic_categorical[0, 0] == 0        # p1 of the first phone: x, not applicable


def test_second_prepare_computes_nothing(demo_prepared, make_data_config, monkeypatch):
    index, normalization, data_path = demo_prepared

    def fail(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(features, "extract_utterance", fail)
    again, normalization_again = prepare_data(make_data_config(), data_path, seed=0, num_workers=1, log=LOG)
    assert again == index
    for key in normalization:
        np.testing.assert_array_equal(normalization[key], normalization_again[key])


def test_seed_changes_shuffled_allocation(demo_prepared, make_data_config):
    _, _, data_path = demo_prepared
    config = make_data_config(speaker_order="shuffled")
    sets = set()
    for seed in range(4):
        index, _ = prepare_data(config, data_path, seed=seed, num_workers=1, log=LOG)
        sets.add(tuple(s["id"] for s in index["speakers"] if s["set"] == "adaptation"))
    assert len(sets) > 1


def test_cache_key_follows_content_and_parameters(demo_corpus_path, make_data_config, tmp_path):
    params = features.feature_params(make_data_config())
    wav = demo_corpus_path / "f1" / "f1_001.wav"
    key = cache.cache_key(params, wav, None)
    assert key == cache.cache_key(params, wav, None)
    assert key != cache.cache_key({**params, "mcep_order": 24}, wav, None)
    changed = tmp_path / "x.wav"
    changed.write_bytes(wav.read_bytes()[:-2] + b"\x01\x00")
    assert key != cache.cache_key(params, changed, None)

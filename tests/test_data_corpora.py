"""Corpus layouts and bad input, on folders made in the test from demo audio."""

import logging
import shutil

import numpy as np
import pytest
import soundfile

from samplernn_pase.data.prepare import prepare_data, require_data_path
from samplernn_pase.errors import UserError

LOG = logging.getLogger("test")
SINGLE = dict(modeling_speakers=None, adaptation_speakers=None, test_seconds_per_speaker=2.0,
              validation_seconds_per_speaker=2.0)


def prepare(config, data_path):
    return prepare_data(config, data_path, seed=0, num_workers=1, log=LOG)


def test_folder_with_bad_files(tmp_path, demo_corpus_path, copy_demo_files, make_data_config):
    speaker = tmp_path / "corpus" / "alice"
    copy_demo_files("f1", [1, 2, 3], speaker)
    (speaker / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (speaker / "empty.wav").write_bytes(b"")
    audio, rate = soundfile.read(demo_corpus_path / "f1" / "f1_004.wav")
    import librosa
    stereo = librosa.resample(audio, orig_sr=rate, target_sr=44100)
    soundfile.write(speaker / "stereo44k.wav", np.stack([stereo, 0.5 * stereo], axis=1), 44100)
    # Labels one second longer than the audio: their duration disagrees with it.
    shutil.copy(demo_corpus_path / "f1" / "f1_004.wav", speaker / "mismatch.wav")
    lines = (demo_corpus_path / "f1" / "f1_004.lab").read_text().splitlines()
    start, end, context = lines[-1].split()
    lines[-1] = f"{start} {int(end) + 10_000_000} {context}"
    (speaker / "mismatch.lab").write_text("\n".join(lines) + "\n")
    index, normalization = prepare(make_data_config(corpora=[{"type": "folder", "path": "corpus"}], **SINGLE), tmp_path)
    report = index["report"]
    assert report["kept"] == 4
    assert report["dropped"] == {"empty_audio": ["corpus/alice/empty.wav"],
                                 "label_duration_mismatch": ["corpus/alice/mismatch.wav"],
                                 "unreadable_audio": ["corpus/alice/corrupt.wav"]}
    assert report["converted"] == {"resampled": 1, "downmixed": 1}
    stereo_entry = next(u for u in index["utterances"] if u["id"] == "folder_alice_stereo44k")
    assert stereo_entry["seconds"] == pytest.approx(len(audio) / rate, abs=0.01)
    assert not stereo_entry["has_labels"] and index["linguistic"] is not None
    assert index["speakers"] == [{"id": "folder_alice", "corpus": "folder", "gender": None,
                                  "seconds": pytest.approx(sum(u["seconds"] for u in index["utterances"]), abs=0.01),
                                  "set": "modeling", "index": 0}]


def test_nothing_valid_is_a_user_error(tmp_path, make_data_config):
    (tmp_path / "corpus" / "bob").mkdir(parents=True)
    (tmp_path / "corpus" / "bob" / "a.wav").write_bytes(b"not audio")
    with pytest.raises(UserError, match="no valid utterance"):
        prepare(make_data_config(corpora=[{"type": "folder", "path": "corpus"}], **SINGLE), tmp_path)


def test_a_missing_data_folder_is_created_for_the_demo_corpus_only(tmp_path, make_data_config):
    require_data_path(make_data_config(), tmp_path / "new" / "data")      # the demo: built there
    assert (tmp_path / "new" / "data").is_dir()
    corpora = [{"type": "demo", "path": "demo"}, {"type": "vctk", "path": "VCTK"}]
    with pytest.raises(UserError, match="other.*data folder not found"):
        require_data_path(make_data_config(corpora=corpora), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_user_errors_name_the_problem(tmp_path, copy_demo_files, make_data_config):
    with pytest.raises(UserError, match="data folder not found"):
        prepare(make_data_config(corpora=[{"type": "folder", "path": "corpus"}]), tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(UserError, match="corpus folder not found"):
        prepare(make_data_config(corpora=[{"type": "folder", "path": "missing"}]), tmp_path)
    with pytest.raises(UserError, match="unknown corpus type 'timit'"):
        prepare(make_data_config(corpora=[{"type": "timit", "path": "x"}]), tmp_path)
    for speaker in ("f1", "m1", "m2"):
        copy_demo_files(speaker, [1, 2], tmp_path / "corpus" / speaker)
    (tmp_path / "corpus" / "speakers.csv").write_text("id,gender\nf1,F\nm1,M\nm2,male\n")
    with pytest.raises(UserError, match=r"modeling_speakers.*gender 'f' but only 1 .*1 f, 2 m"):
        prepare(make_data_config(corpora=[{"type": "folder", "path": "corpus"}], modeling_speakers={"f": 2, "m": 1},
                                 adaptation_speakers=None), tmp_path)
    index, _ = prepare(make_data_config(corpora=[{"type": "folder", "path": "corpus"}],
                                        modeling_speakers={"f": 1, "m": 1}, adaptation_speakers={"m": 1},
                                        test_seconds_per_speaker=1, validation_seconds_per_speaker=0), tmp_path)
    assert [(s["id"], s["gender"], s["set"]) for s in index["speakers"]][-1][2] == "adaptation"
    assert sorted(s["gender"] for s in index["speakers"]) == ["f", "m", "m"]
    # named modeling speakers: those and no other, adaptation from the rest; a name not in the corpus refused
    named = dict(corpora=[{"type": "folder", "path": "corpus"}], adaptation_speakers={"m": 1},
                 test_seconds_per_speaker=1, validation_seconds_per_speaker=0)
    for modeling in (["folder_m2", "folder_f1"], ["folder_m1", "folder_f1"]):
        index, _ = prepare(make_data_config(modeling_speakers=modeling, **named), tmp_path)
        sets = {s["id"]: s["set"] for s in index["speakers"]}
        assert sorted(s for s, kind in sets.items() if kind == "modeling") == sorted(modeling)
        assert [s for s, kind in sets.items() if kind == "adaptation"] == \
            [s for s in ("folder_m1", "folder_m2") if s not in modeling]
    with pytest.raises(UserError, match=r"^data.modeling_speakers: folder_m9 not among the corpora's speakers"):
        prepare(make_data_config(modeling_speakers=["folder_f1", "folder_m9"], **named), tmp_path)


def test_ljspeech_layout(tmp_path, copy_demo_files, make_data_config):
    root = tmp_path / "LJSpeech-1.1"
    copy_demo_files("f3", range(1, 6), root / "wavs", stem_format="LJ001-{number:04d}", with_labels=False)
    rows = [f"LJ001-{n:04d}|Text {n}.|Text {n}." for n in range(1, 7)]  # 0006 is listed but missing
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    index, normalization = prepare(make_data_config(corpora=[{"type": "ljspeech", "path": "LJSpeech-1.1"}], **SINGLE),
                                   tmp_path)
    assert [u["id"] for u in index["utterances"]] == [f"ljspeech_LJ001-{n:04d}" for n in range(1, 6)]
    assert index["report"]["dropped"] == {"missing_audio": ["LJSpeech-1.1/wavs/LJ001-0006.wav"]}
    assert index["speakers"][0]["gender"] == "f" and index["speakers"][0]["set"] == "modeling"
    assert {u["split"] for u in index["utterances"]} == {"train", "validation", "test"}
    assert index["linguistic"] is None and "linguistic_real_mean" not in normalization


def test_cmu_arctic_layout_with_labels(tmp_path, copy_demo_files, make_data_config):
    for speaker, demo_speaker in (("slt", "f2"), ("bdl", "m2")):
        folder = tmp_path / "arctic" / f"cmu_us_{speaker}_arctic"
        copy_demo_files(demo_speaker, range(1, 4), folder / "wav", stem_format="arctic_a{number:04d}")
        (folder / "etc").mkdir()
        (folder / "etc" / "txt.done.data").write_text(
            "".join(f'( arctic_a{n:04d} "Sentence {n}." )\n' for n in range(1, 4)))
    index, normalization = prepare(make_data_config(
        corpora=[{"type": "cmu_arctic", "path": "arctic"}], modeling_speakers={"f": 1, "m": 1},
        adaptation_speakers=None, test_seconds_per_speaker=1, validation_seconds_per_speaker=1), tmp_path)
    assert len(index["utterances"]) == 6 and index["report"]["kept"] == 6
    assert all(u["has_labels"] for u in index["utterances"])
    assert {(s["id"], s["gender"]) for s in index["speakers"]} == {("cmu_arctic_slt", "f"), ("cmu_arctic_bdl", "m")}
    assert "cmu_arctic_bdl_arctic_a0001" in {u["id"] for u in index["utterances"]}
    assert normalization["linguistic_real_mean"].shape == (2, 45)


@pytest.mark.parametrize("version", ["0.80", "0.92"])
def test_vctk_layouts(tmp_path, copy_demo_files, make_data_config, version):
    root = tmp_path / "VCTK"
    for speaker, demo_speaker in (("p225", "f4"), ("p226", "m3")):
        if version == "0.80":
            copy_demo_files(demo_speaker, range(1, 4), root / "wav48" / speaker, stem_format=speaker + "_{number:03d}")
        else:
            copy_demo_files(demo_speaker, range(1, 4), root / "wav48_silence_trimmed" / speaker,
                            stem_format=speaker + "_{number:03d}_mic1", with_labels=False)
            for wav in (root / "wav48_silence_trimmed" / speaker).glob("*.wav"):
                audio, rate = soundfile.read(wav)
                soundfile.write(wav.with_suffix(".flac"), audio, rate)
                shutil.copy(wav.with_suffix(".flac"), wav.with_name(wav.stem.replace("mic1", "mic2") + ".flac"))
                wav.unlink()
    prefix = "" if version == "0.80" else "p"
    (root / "speaker-info.txt").write_text(
        f"ID  AGE  GENDER  ACCENTS  REGION\n{prefix}225  23  F    English    Southern  England\n"
        f"{prefix}226  22  M    English    Surrey\n")
    index, _ = prepare(make_data_config(corpora=[{"type": "vctk", "path": "VCTK"}], modeling_speakers={"f": 1, "m": 1},
                                        adaptation_speakers={}, test_seconds_per_speaker=1,
                                        validation_seconds_per_speaker=1), tmp_path)
    assert sorted(u["id"] for u in index["utterances"]) == sorted(
        f"vctk_{s}_{n:03d}" for s in ("p225", "p226") for n in range(1, 4))
    assert {(s["id"], s["gender"]) for s in index["speakers"]} == {("vctk_p225", "f"), ("vctk_p226", "m")}
    assert all(u["has_labels"] == (version == "0.80") for u in index["utterances"])
    if version == "0.92":
        assert all(u["audio"].endswith("_mic1.flac") for u in index["utterances"])


def test_two_corpora_at_once(tmp_path, copy_demo_files, make_data_config):
    copy_demo_files("f1", [1, 2, 3], tmp_path / "one" / "anna")
    copy_demo_files("m1", [1, 2, 3], tmp_path / "two" / "anna")
    config = make_data_config(corpora=[{"type": "folder", "path": "one", "name": "one"},
                                       {"type": "folder", "path": "two", "name": "two"}], **SINGLE)
    index, _ = prepare(config, tmp_path)
    assert [s["id"] for s in index["speakers"]] == ["one_anna", "two_anna"]
    config["corpora"] = [{"type": "folder", "path": "one"}, {"type": "folder", "path": "two"}]
    with pytest.raises(UserError, match="two corpora"):
        prepare(config, tmp_path)


def test_a_damaged_cache_entry_is_logged_by_name_and_recomputed(tmp_path, copy_demo_files,
                                                                make_data_config, caplog):
    copy_demo_files("f1", [1, 2, 3, 4], tmp_path / "corpus" / "alice")
    config = make_data_config(corpora=[{"type": "folder", "path": "corpus"}], **SINGLE)
    first, _ = prepare(config, tmp_path)
    damaged = tmp_path / first["utterances"][0]["features"]
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[:100])                   # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, logger="test"):
        again, _ = prepare(config, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1 and str(damaged) in warnings[0] and "recomputed" in warnings[0]
    assert again == first
    with np.load(damaged, allow_pickle=False) as entry:            # rewritten whole
        assert len(entry["audio"]) == int(entry["num_samples"]) > 0

"""The demo corpus's 48 voices: balanced, named, made of what eSpeak NG ships, and told apart
by a speaker encoder the project did not train (Resemblyzer)."""

import importlib.util
import json
from pathlib import Path

import espeakng_loader
import pytest

from samplernn_pase.data.demo_corpus import SPEAKERS
from samplernn_pase.errors import UserError
from samplernn_pase.experiment.config import validate_config

ROOT = Path(__file__).resolve().parents[1]


def variant_gender(variant: str) -> str | None:
    """The `gender` line of eSpeak NG's own variant file (voices/!v/<variant>), as it ships."""
    for line in (Path(espeakng_loader.get_data_path()) / "voices" / "!v" / variant).read_text(
            encoding="utf-8", errors="replace").splitlines():
        words = line.split()
        if words and words[0].lower() == "gender" and len(words) > 1:
            return words[1][0].lower()
    return None


def test_48_voices_alternate_genders_with_distinct_settings_of_shipped_variants():
    assert len(SPEAKERS) == 48
    ids = [row[0] for row in SPEAKERS]
    assert ids == [f"{g}{k}" for k in range(1, 25) for g in ("f", "m")]
    assert all(row[1] == row[0][0] for row in SPEAKERS)
    settings = [row[2:] for row in SPEAKERS]
    assert len(set(settings)) == 48
    for speaker, gender, variant, pitch, pitch_range, rate in SPEAKERS:
        declared = variant_gender(variant)        # raises if eSpeak does not ship the variant
        assert declared in (None, gender), (speaker, variant, declared)
        assert 0 <= pitch <= 100 and 0 <= pitch_range <= 100 and 80 <= rate <= 450


def test_num_speakers_goes_to_48_and_no_further():
    config = json.loads((ROOT / "config.default.json").read_text())
    config["data"]["corpora"] = [{"type": "demo", "path": "demo48"}]
    config["data"]["demo"] = {"num_speakers": 48}
    assert validate_config(config)["data"]["demo"]["num_speakers"] == 48
    config["data"]["demo"] = {"num_speakers": 49}
    with pytest.raises(UserError, match="num_speakers"):
        validate_config(config)


def test_resemblyzer_tells_the_48_voices_apart(tmp_path):
    """Every voice reads 3 sentences; each recording is identified by its nearest centroid
    among all 48 (its own made of its 2 other recordings). Chance is 1 in 48."""
    spec = importlib.util.spec_from_file_location("demo_voices", ROOT / "bench" / "demo_voices.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from samplernn_pase.data.demo_corpus import build_demo_corpus
    root = build_demo_corpus(tmp_path / "demo48", 48, 3, 16000)
    result = bench.judge(root, [row[0] for row in SPEAKERS])
    assert result["identified"] >= 0.75, result
    assert min(result["identified_by_gender"].values()) >= 0.6, result
    assert result["own"] - result["other"] >= 0.2, result

"""What a report shows, read from the experiment folder alone.

Everything here is driven by the files present, not by the model family:
`results/epoch-N/` is globbed for audio and images, which are grouped by
utterance (`<stem>.wav`, `<stem>.real.wav`, `<stem>.world.wav`, `<stem>.png`
...), and `metrics.json` is flattened generically (nested sections become
dotted keys, non-numeric values are left out). A family that writes other
files, or other metrics, appears in the report without a change here.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..experiment.folder import Experiment, torch_load
from ..runners.rendering import file_stem  # the name an utterance's results are written under

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg"}
# Sections of metrics.json that hold one entry per utterance, not a summary.
PER_UTTERANCE_KEYS = {"utterances", "per_utterance"}
UTTERANCE_ID_KEYS = ("id", "utterance", "utterance_id")
# How the variants of one utterance are labelled and ordered; others keep their suffix.
VARIANT_LABELS = {"": "generated", "real": "real recording", "world": "WORLD resynthesis"}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flatten_numbers(tree, prefix: str = "") -> dict[str, float]:
    """{"a": {"b": 1, "c": "x"}, "d": 2} -> {"a.b": 1, "d": 2}: numeric leaves of nested dicts."""
    flat = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    elif is_number(tree) and prefix:
        flat[prefix] = float(tree)
    return flat


def summary_metrics(metrics: dict) -> dict[str, float]:
    """The epoch-level figures of a metrics.json: everything but the per-utterance sections."""
    return flatten_numbers({k: v for k, v in metrics.items()
                            if k not in PER_UTTERANCE_KEYS and k != "epoch"})


def per_utterance_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """utterance id -> flattened metrics, from `utterances` ({id: {...}}) or `per_utterance`
    ([{"id": ..., ...}] or {id: {...}})."""
    table = {}
    for key in PER_UTTERANCE_KEYS:
        entries = metrics.get(key)
        if isinstance(entries, dict):
            items = entries.items()
        elif isinstance(entries, list):
            items = []
            for entry in entries:
                if isinstance(entry, dict):
                    name = next((entry[k] for k in UTTERANCE_ID_KEYS if isinstance(entry.get(k), str)), None)
                    if name is not None:
                        items.append((name, {k: v for k, v in entry.items() if k not in UTTERANCE_ID_KEYS}))
        else:
            continue
        for name, values in items:
            table.setdefault(str(name), {}).update(flatten_numbers(values))
    return table


def utterance_texts(metrics: dict) -> dict[str, dict[str, str]]:
    """utterance id -> {"said": reference text, "heard": the model's transcript,
    "heard (<row>)": each reference row's}, from the intelligibility judge's entries."""
    texts: dict[str, dict[str, str]] = {}
    rows = [("", metrics.get("utterances"))]
    rows += [(row, entry.get("utterances")) for row, entry in (metrics.get("references") or {}).items()
             if isinstance(entry, dict)]
    for row, entries in rows:
        for name, values in (entries if isinstance(entries, dict) else {}).items():
            if not isinstance(values, dict):
                continue
            if isinstance(values.get("reference_text"), str):
                texts.setdefault(str(name), {})["said"] = values["reference_text"]
            if isinstance(values.get("transcript"), str):
                texts.setdefault(str(name), {})[f"heard ({row})" if row else "heard"] = values["transcript"]
    return texts


def series_of(key: str) -> tuple[str, str]:
    """A flattened key as (metric, series): "model.mcd_db" -> ("mcd_db", "model"), so that the
    model and its reference rows share one plot; a top-level number is its own series."""
    head, _, rest = key.partition(".")
    return (rest, head) if rest else (key, "")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --- the experiment's files ---------------------------------------------------------


@dataclass
class Media:
    label: str
    path: Path


@dataclass
class UtteranceResult:
    """One test utterance of one epoch: its audio variants, images and metrics."""
    stem: str
    audio: list[Media] = field(default_factory=list)
    images: list[Media] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)   # the words to say and what Whisper heard

    def variant(self, label: str) -> Media | None:
        return next((m for m in self.audio if m.label == label), None)


@dataclass
class ResultSection:
    """A folder of rendered results: `results/epoch-N/` itself or a subfolder of it
    (`adaptation/` for `test --speakers adaptation`, `samples/` for `test_sample`)."""
    name: str
    folder: Path
    summary: dict[str, float]
    utterances: list[UtteranceResult]
    other_audio: list[Media]
    other_images: list[Media]


@dataclass
class EpochResults:
    epoch: int
    folder: Path
    sections: list[ResultSection]


def variant_order(label: str) -> tuple[int, str]:
    order = list(VARIANT_LABELS.values())
    return (order.index(label), "") if label in order else (len(order), label)


def read_section(name: str, folder: Path, known_stems: list[str]) -> ResultSection:
    """Group the media files of `folder` by utterance and attach the metrics."""
    metrics = read_json(folder / "metrics.json") or {}
    per_utterance = per_utterance_metrics(metrics)
    # Corpus utterances first (so "X.upsampled.wav" is a variant of X, next to X's recording),
    # then names that only metrics.json knows (MelNet's unconditional "sample-0").
    stems = sorted(known_stems, key=len, reverse=True)
    stems += sorted({file_stem(i) for i in per_utterance} - set(stems), key=len, reverse=True)
    groups: dict[str, UtteranceResult] = {}
    other_audio, other_images = [], []
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in AUDIO_SUFFIXES | IMAGE_SUFFIXES:
            continue
        name_stem = path.name[:-len(path.suffix)]
        group = next((s for s in stems if name_stem == s or name_stem.startswith(s + ".")), None)
        if group is None:
            (other_audio if suffix in AUDIO_SUFFIXES else other_images).append(Media(name_stem, path))
            continue
        variant = name_stem[len(group) + 1:]
        result = groups.setdefault(group, UtteranceResult(group))
        if suffix in AUDIO_SUFFIXES:
            result.audio.append(Media(VARIANT_LABELS.get(variant, variant), path))
        else:
            result.images.append(Media(variant or "spectrograms", path))
    for utterance_id, values in per_utterance.items():
        stem = file_stem(utterance_id)
        group = next((s for s in stems if stem == s or stem.startswith(s + ".")), stem)
        if group in groups:
            variant = stem[len(group) + 1:]
            groups[group].metrics.update({f"{variant}.{k}" if variant else k: v
                                          for k, v in values.items()})
    for utterance_id, texts in utterance_texts(metrics).items():
        stem = file_stem(utterance_id)
        group = next((s for s in stems if stem == s or stem.startswith(s + ".")), stem)
        if group in groups:
            groups[group].texts.update(texts)
    for result in groups.values():
        result.audio.sort(key=lambda m: variant_order(m.label))
    return ResultSection(name, folder, summary_metrics(metrics), list(groups.values()),
                         other_audio, other_images)


def read_epoch_results(experiment: Experiment, epoch: int, known_stems: list[str]) -> EpochResults:
    folder = experiment.epoch_results_dir(epoch)
    sections = [read_section("", folder, known_stems)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        section = read_section(sub.name, sub, known_stems)
        if section.summary or section.utterances or section.other_audio or section.other_images:
            sections.append(section)
    return EpochResults(epoch, folder, sections)


def result_epochs(experiment: Experiment) -> list[int]:
    """Epochs that have a results folder, in order."""
    if not experiment.results_dir.is_dir():
        return []
    epochs = []
    for path in experiment.results_dir.iterdir():
        number = path.name.removeprefix("epoch-")
        if path.is_dir() and path.name.startswith("epoch-") and number.isdigit():
            epochs.append(int(number))
    return sorted(epochs)


def metrics_over_epochs(experiment: Experiment) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """metric -> series -> [(epoch, value)], from every epoch's metrics.json (and its subfolders',
    whose series are prefixed with the folder name)."""
    table: dict[str, dict[str, list]] = {}
    for epoch in result_epochs(experiment):
        folder = experiment.epoch_results_dir(epoch)
        sources = [("", folder / "metrics.json")]
        sources += [(f"{sub.name}: ", sub / "metrics.json") for sub in sorted(folder.iterdir()) if sub.is_dir()]
        for prefix, path in sources:
            metrics = read_json(path) if path.is_file() else None
            if not isinstance(metrics, dict):
                continue
            for key, value in summary_metrics(metrics).items():
                metric, series = series_of(key)
                table.setdefault(metric, {}).setdefault(prefix + series, []).append((epoch, value))
    return table


def training_history(experiment: Experiment) -> list[dict]:
    """The loop's per-epoch record (epoch, iteration, train_loss, validation_loss, ...), kept in
    every epoch checkpoint; the latest one holds all epochs. Memory-mapped: weights are not read."""
    epochs = experiment.checkpoint_epochs()
    if not epochs:
        return []
    state = torch_load(experiment.checkpoint_path(epochs[-1]), mmap=True)
    history = state.get("loop", {}).get("history", [])
    return [entry for entry in history if isinstance(entry, dict) and "epoch" in entry]


def loss_name(config: dict) -> str:
    from ..errors import UserError
    from ..runners import runner_class
    try:
        return runner_class(config["model"]["type"]).loss_name
    except (UserError, KeyError, TypeError):
        return "loss"


def data_summary(index: dict) -> dict:
    """Speakers per set (with genders), utterances and hours per split, files left out."""
    speaker_sets = {}
    for speaker in index.get("speakers", []):
        entry = speaker_sets.setdefault(speaker.get("set") or "?", {"count": 0, "genders": {}, "ids": []})
        entry["count"] += 1
        gender = speaker.get("gender") or "?"
        entry["genders"][gender] = entry["genders"].get(gender, 0) + 1
        entry["ids"].append(speaker["id"])
    splits = {}
    for split in ("train", "validation", "test"):
        utterances = [u for u in index.get("utterances", []) if u.get("split") == split]
        splits[split] = {"utterances": len(utterances),
                         "hours": sum(u.get("seconds", 0.0) for u in utterances) / 3600}
    report = index.get("report") or {}
    dropped = {reason: list(files) for reason, files in (report.get("dropped") or {}).items()}
    return {"speaker_sets": speaker_sets, "splits": splits, "kept": report.get("kept"),
            "dropped": dropped, "dropped_count": sum(len(f) for f in dropped.values()),
            "other": {k: v for k, v in report.items() if k not in ("kept", "dropped")}}

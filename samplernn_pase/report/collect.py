"""What a report shows, read from the experiment folder alone.

Everything here is driven by the files present, not by the model family:
`results/epoch-N/` is globbed for audio and images, which are grouped by
utterance (`<stem>.wav`, `<stem>.real.wav`, `<stem>.world.wav`, `<stem>.png`
...), and `metrics.json` is flattened generically for the tables (nested
sections become dotted keys, non-numeric values are left out). A family that
writes other files, or other metrics, appears in the report without a change
here.

What is plotted and what the answers table holds is the judges' table
(metrics/judges.py), the same one TensorBoard's charts are grouped by: each
judge's model figure beside its reference rows, never a setting, a count or a
per-utterance figure.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..experiment.folder import Experiment, torch_load
from ..metrics.judges import JUDGES, Judge, is_number, judged
from ..runners.rendering import file_stem  # the name an utterance's results are written under

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg"}
# Sections of metrics.json that hold one entry per utterance, not a summary.
PER_UTTERANCE_KEYS = {"utterances", "per_utterance"}
UTTERANCE_ID_KEYS = ("id", "utterance", "utterance_id")
JUDGE_ORDER = {judge.key: i for i, judge in enumerate(JUDGES)}   # the answers' row order
# How the variants of one utterance are labelled and ordered; others keep their suffix.
VARIANT_LABELS = {"": "generated", "real": "real recording", "world": "WORLD resynthesis"}


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


def judged_metrics(experiment: Experiment, epoch: int) -> dict[str, dict]:
    """Set name ("" for `results/epoch-N/`, the modeling speakers) -> its metrics.json: that
    folder's and its subfolders' that hold the test of a speaker set (a folder named after its
    metrics' `speaker_set`, e.g. `adaptation/`); `samples/` of test_sample is no set of its own."""
    folder = experiment.epoch_results_dir(epoch)
    found = {}
    for name, path in [("", folder)] + [(sub.name, sub) for sub in sorted(folder.iterdir()) if sub.is_dir()]:
        metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else None
        if isinstance(metrics, dict) and (name == "" or metrics.get("speaker_set") == name):
            found[name] = metrics
    return found


def line_label(set_name: str, line: str) -> str:
    return f"{set_name}: {line}" if set_name else line


def judge_curves(experiment: Experiment) -> list[tuple[Judge, dict[str, list[tuple[int, float]]]]]:
    """(judge, line -> [(epoch, value)]) for every judge some epoch has a model figure of, in
    the order of the judges' table: the model and its reference rows on the same axes (a
    speaker set's subfolder adds its lines as "adaptation: model", ...)."""
    curves: dict[str, tuple[Judge, dict]] = {}
    for epoch in result_epochs(experiment):
        for set_name, metrics in judged_metrics(experiment, epoch).items():
            for judge, values in judged(metrics):
                lines = curves.setdefault(judge.key, (judge, {}))[1]
                for line, value in values.items():
                    points = lines.setdefault(line_label(set_name, line), [])
                    if value is not None:
                        points.append((epoch, value))
    return sorted(curves.values(), key=lambda entry: JUDGE_ORDER[entry[0].key])


@dataclass
class AnswersTable:
    """The judges of one speaker set at the latest and the best epoch: `epochs` [(label,
    epoch)], `columns` the lines (model, then the reference rows), `rows` [(judge, [[value per
    column] per epoch])]."""
    set_name: str
    epochs: list[tuple[str, int]]
    columns: list[str]
    rows: list[tuple[Judge, list[list[float | None]]]]


def answers(experiment: Experiment, epochs: list[tuple[str, int]]) -> list[AnswersTable]:
    """One table per judged speaker set of the given epochs (label, epoch), "" (the modeling
    speakers) first."""
    per_epoch = [judged_metrics(experiment, epoch) for _, epoch in epochs]
    tables = []
    for set_name in dict.fromkeys(name for found in per_epoch for name in found):
        values: dict[str, tuple[Judge, list[dict]]] = {}
        for index, found in enumerate(per_epoch):
            for judge, lines in judged(found.get(set_name, {})):
                values.setdefault(judge.key, (judge, [{} for _ in epochs]))[1][index] = lines
        columns = list(dict.fromkeys(line for _, found in values.values() for lines in found for line in lines))
        rows = [(judge, [[lines.get(column) for column in columns] for lines in found])
                for judge, found in sorted(values.values(), key=lambda entry: JUDGE_ORDER[entry[0].key])]
        tables.append(AnswersTable(set_name, list(epochs), columns, rows))
    return tables


def training_history(experiment: Experiment) -> list[dict]:
    """The loop's per-epoch record (epoch, iteration, train_loss, validation_loss, ...), kept in
    every epoch checkpoint; the latest one holds all epochs. Memory-mapped: weights are not read."""
    epochs = experiment.checkpoint_epochs()
    if not epochs:
        return []
    state = torch_load(experiment.checkpoint_path(epochs[-1]), mmap=True)
    history = state.get("loop", {}).get("history", [])
    return [entry for entry in history if isinstance(entry, dict) and "epoch" in entry]


def loss_name(config: dict, validation: bool = False) -> str:
    """The family's training loss name; `validation`: what its validation loss measures (HiFi-GAN:
    the mel L1, not its discriminator loss)."""
    from ..errors import UserError
    from ..runners import runner_class
    try:
        runner = runner_class(config["model"]["type"])
    except (UserError, KeyError, TypeError):
        return "loss"
    return (validation and runner.validation_loss_name) or runner.loss_name


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

"""What every runner's `test` writes: wav, spectrogram PNG, metrics.json, TensorBoard."""

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..audio.io import write_wav
from ..audio.plots import png_to_array, save_images, save_spectrogram_comparison
from ..errors import UserError
from ..experiment.folder import atomic_write_json
from ..metrics.judges import judged


@dataclass
class RenderedItem:
    """One rendering of a `test`, what `write_results` writes: plain data (arrays, numbers,
    strings), since other ranks send theirs to rank 0."""

    id: str                        # file stem of its wav and PNG, key of metrics.json's utterances
    audio: np.ndarray              # the generated audio
    reference: np.ndarray | None = None   # the audio its spectrogram image compares with
    metrics: dict = field(default_factory=dict)
    images: list | None = None     # panels for audio.plots.save_images (instead of the comparison)
    utterance: str | None = None   # the test utterance it renders: its speaker is judged
    words_of: str | None = None    # the utterance whose words it says from its start (WER, CER)
    words_span: int | None = None  # samples of that recording it says (default: its own length)
    references: dict = field(default_factory=dict)         # {row name: audio}, e.g. real, world
    reference_metrics: dict = field(default_factory=dict)  # {row name: metrics}
    extra: dict = field(default_factory=dict)              # what a family keeps for its own summary

    @classmethod
    def of(cls, item) -> "RenderedItem":
        """An item, or a dict of its fields (the keys it does not name go to `extra`)."""
        if isinstance(item, cls):
            return item
        names = {f.name for f in fields(cls)}
        known = {key: value for key, value in item.items() if key in names and value is not None}
        return cls(**known, extra={**known.pop("extra", {}),
                                   **{key: value for key, value in item.items() if key not in names}})


def choose_test_utterances(index: dict, count: int, speaker_set: str = "modeling") -> list[str]:
    """A fixed list: test-split utterances of the speaker set, one per speaker first."""
    speakers = {s["id"]: s for s in index["speakers"] if s["set"] == speaker_set}
    candidates = [u for u in index["utterances"] if u["split"] == "test" and u["speaker"] in speakers]
    chosen, seen = [], set()
    for utterance in candidates:            # one per speaker, in index order
        if utterance["speaker"] not in seen:
            chosen.append(utterance["id"])
            seen.add(utterance["speaker"])
    for utterance in candidates:            # then fill up
        if utterance["id"] not in chosen:
            chosen.append(utterance["id"])
    return chosen[:count]


def test_tag(speaker_set: str) -> str:
    """TensorBoard prefix of a test of one speaker set."""
    return "test" if speaker_set == "modeling" else f"test_{speaker_set}"


def utterances_to_render(index: dict, test_config: dict, speaker_set: str = "modeling",
                         utterance_ids: list[str] | None = None) -> list[str]:
    """The utterances a `test` renders: the given ones, or the fixed list of the config."""
    if utterance_ids is None:
        utterance_ids = choose_test_utterances(index, test_config["utterances"], speaker_set)
    if not utterance_ids:
        raise UserError(f"test: no test utterance of {speaker_set} speakers in data.json")
    return utterance_ids


def max_test_frames(test_config: dict, sample_rate: int, hop_length: int) -> int | None:
    """Whole frames of `hop_length` samples in test.max_seconds; None: no limit."""
    max_seconds = test_config["max_seconds"]
    return None if max_seconds is None else int(max_seconds * sample_rate) // hop_length


def file_stem(utterance_id: str) -> str:
    return utterance_id.replace("/", "__")


def mean_metrics(per_utterance: dict[str, dict]) -> dict:
    keys = sorted({k for metrics in per_utterance.values() for k in metrics})
    means = {}
    for key in keys:
        if any(isinstance(m.get(key), str) for m in per_utterance.values()):
            continue        # text (a transcript) has no mean
        values = [m[key] for m in per_utterance.values()
                  if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
        means[key] = float(np.mean(values)) if values else None
    return means


def write_results(out_dir: Path, epoch: int, sample_rate: int, rendered: list[dict],
                  writer=None, tag: str = "test", evaluation=None, speaker_set: str = "modeling",
                  max_samples: int | None = None, frechet_items=None,
                  extra: dict | None = None, sections: dict | None = None) -> dict:
    """Write what a `test` renders, judged by the independent evaluation when one is given.

    `rendered`: `RenderedItem`s (or dicts of their fields); no `words_of` (e.g. samples): no WER.

    Writes `<id>.wav`, `<id>.<row>.wav` for every reference row, `<id>.png`
    (none for an item with neither `images` nor `reference`) and `metrics.json`:

        epoch, speaker_set,
        mean, utterances           the generated audio (as before: per utterance and mean)
        references: {row: {mean, utterances}}   the same figures for each reference row
        frechet: {embedder: {distance, floor, generated, real, ...}}
        evaluation                 how it was judged (encoder, MOS model, analysis settings)

    and mirrors audio, images and the judges (metrics/judges.py: the model and its
    reference rows on one chart per judge, `log_judges`) to TensorBoard.
    `frechet_items`: ids of the items whose audio forms the generated set of the
    Fréchet distances (default: all). `extra`: figures over all utterances
    together (e.g. codebook usage), added to the means. `sections`: top-level
    entries a family adds (its `frechet` entries join the audio's).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_utterance, reference_rows, generated_set = {}, {}, []
    rendered = [RenderedItem.of(item) for item in rendered]
    for item in rendered:
        stem = file_stem(item.id)
        audio, png = write_item_files(out_dir / stem, item, sample_rate)
        per_utterance[item.id], words = judge_item(item, audio, evaluation)
        if frechet_items is None or item.id in frechet_items:
            generated_set.append(audio)
        for row, row_metrics in write_reference_rows(out_dir / stem, item, sample_rate, evaluation, words).items():
            reference_rows.setdefault(row, {})[item.id] = row_metrics
        if writer is not None:
            # One tag per kind: TensorBoard files a tag under one plugin only.
            writer.add_audio(f"{tag}_audio/{stem}", audio, epoch, sample_rate=sample_rate)
            if png is not None:
                writer.add_image(f"{tag}_spectrogram/{stem}", png_to_array(png), epoch,
                                 dataformats="HWC")
    metrics = {"epoch": epoch, "speaker_set": speaker_set, "mean": {**mean_metrics(per_utterance), **(extra or {})},
               "utterances": per_utterance,
               "references": {row: {"mean": mean_metrics(rows), "utterances": rows}
                              for row, rows in reference_rows.items()}}
    if evaluation is not None:
        metrics["frechet"] = evaluation.frechet(generated_set, speaker_set, max_samples)
        metrics["evaluation"] = evaluation.settings({item.words_of for item in rendered})
    for key, value in (sections or {}).items():
        metrics[key] = {**metrics.get(key, {}), **value} if key == "frechet" else value
    atomic_write_json(out_dir / "metrics.json", metrics)
    if writer is not None:
        log_judges(writer, metrics, tag, epoch)
    return metrics


def as_written(audio) -> np.ndarray:
    """Rendered audio as a `test` writes and judges it: float32, clipped to [-1, 1]."""
    return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)


def judge_item(item: RenderedItem, audio: np.ndarray, evaluation) -> tuple[dict, str | None]:
    """The item's metrics with the judges' figures (when `evaluation` is given), and the words
    it was scored against (None: none known)."""
    metrics = dict(item.metrics)
    if evaluation is None:
        return metrics, None
    # The words said in the span the item covers; its reference rows are cut the same way.
    # `words_span`: samples of the recording the audio says (default its own length);
    # audio on predicted durations covers a span of the recording of another length.
    span = len(audio) if item.words_span is None else item.words_span
    words = evaluation.spoken_words(item.words_of, span)
    metrics.update(evaluation.judge(audio, item.utterance, words))
    if words is not None:
        metrics["reference_text"] = words
    return metrics, words


def write_item_files(stem: Path, item: RenderedItem, sample_rate: int):
    """`<stem>.wav` of the item's audio (clipped to [-1, 1]) and `<stem>.png`: its image panels,
    or its spectrogram beside its reference's, or none (nothing to compare with, e.g. GAN
    samples drawn together by the runner). Returns (the clipped audio, the PNG's path or None)."""
    audio = as_written(item.audio)
    write_wav(stem.with_name(f"{stem.name}.wav"), audio, sample_rate)
    png = stem.with_name(f"{stem.name}.png")
    if item.images is not None:
        return audio, save_images(png, item.images)
    if item.reference is not None:
        return audio, save_spectrogram_comparison(png, audio, item.reference, sample_rate)
    return audio, None


def write_reference_rows(stem: Path, item: RenderedItem, sample_rate: int, evaluation, words) -> dict:
    """`<stem>.<row>.wav` of each reference row of the item (clipped to [-1, 1]); returns
    {row: its metrics}, judged by `evaluation` (when given) on the same `words`."""
    metrics = {}
    for row, reference in item.references.items():
        reference = as_written(reference)
        write_wav(stem.with_name(f"{stem.name}.{row}.wav"), reference, sample_rate)
        metrics[row] = dict(item.reference_metrics.get(row, {}))
        if evaluation is not None:
            metrics[row].update(evaluation.judge_reference(row, reference, item.utterance, words))
    return metrics


def log_judges(writer, metrics: dict, tag: str, epoch: int) -> None:
    """metrics.json's judges (metrics/judges.py) to TensorBoard: one chart per judge,
    `<tag>/<judge key>`, whose lines are the model and its reference rows (tensorboardX
    `add_scalars`: one run per line, `<tag>/<judge key>/<line>`). A missing figure is left out."""
    for judge, values in judged(metrics):
        lines = {label: value for label, value in values.items() if value is not None}
        writer.add_scalars(f"{tag}/{judge.key}", lines, epoch)

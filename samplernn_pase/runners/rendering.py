"""What every runner's `test` writes: wav, spectrogram PNG, metrics.json, TensorBoard."""

import math
from pathlib import Path

import numpy as np

from ..audio.io import write_wav
from ..audio.plots import png_to_array, save_images, save_spectrogram_comparison
from ..errors import UserError
from ..experiment.folder import atomic_write_json


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
                  extra: dict | None = None) -> dict:
    """Write what a `test` renders, judged by the independent evaluation when one is given.

    `rendered`: dicts with `id`, `audio` (generated), `reference` (for the
    spectrogram image), `metrics`, and optionally `images` (panels for
    audio.plots.save_images: plain data, so that ranks can send it to rank 0), `utterance` (the test utterance it renders: its speaker is
    judged), `words_of` (the transcribed utterance whose words the audio says, from its
    start: its WER and CER are judged, and those of its reference rows; leave it out for
    audio that says nothing known, e.g. samples), `references` ({row name: audio}, e.g. the real recording and the
    WORLD resynthesis) with `reference_metrics` ({row name: metrics}).

    Writes `<id>.wav`, `<id>.<row>.wav` for every reference row, `<id>.png`
    (none for an item with neither `images` nor `reference`) and `metrics.json`:

        epoch, speaker_set,
        mean, utterances           the generated audio (as before: per utterance and mean)
        references: {row: {mean, utterances}}   the same figures for each reference row
        frechet: {embedder: {distance, floor, generated, real, ...}}
        evaluation                 how it was judged (encoder, MOS model, analysis settings)

    and mirrors audio, images and every mean to TensorBoard (`<tag>/<key>`,
    `<tag>/<row>/<key>`, `<tag>/frechet_<embedder>/distance|floor`).
    `frechet_items`: ids of the items whose audio forms the generated set of the
    Fréchet distances (default: all). `extra`: figures over all utterances
    together (e.g. codebook usage), added to the means.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_utterance, reference_rows, generated_set = {}, {}, []
    for item in rendered:
        stem = file_stem(item["id"])
        audio = np.clip(np.asarray(item["audio"], dtype=np.float32), -1.0, 1.0)
        write_wav(out_dir / f"{stem}.wav", audio, sample_rate)
        if item.get("images") is not None:
            png = save_images(out_dir / f"{stem}.png", item["images"])
        elif item.get("reference") is not None:
            png = save_spectrogram_comparison(out_dir / f"{stem}.png", audio, item["reference"],
                                              sample_rate)
        else:       # nothing to compare with (e.g. GAN samples, drawn together by the runner)
            png = None
        metrics = dict(item["metrics"])
        words = None
        if evaluation is not None:
            # The words said in the span the item covers; its reference rows are cut the same way.
            # `words_span` (samples of the recording the audio says; default its own length):
            # audio on predicted durations covers a span of the recording of another length.
            words = evaluation.spoken_words(item.get("words_of"), item.get("words_span", len(audio)))
            metrics.update(evaluation.judge(audio, item.get("utterance"), words))
            if words is not None:
                metrics["reference_text"] = words
        per_utterance[item["id"]] = metrics
        if frechet_items is None or item["id"] in frechet_items:
            generated_set.append(audio)
        for row, reference in (item.get("references") or {}).items():
            reference = np.clip(np.asarray(reference, dtype=np.float32), -1.0, 1.0)
            write_wav(out_dir / f"{stem}.{row}.wav", reference, sample_rate)
            row_metrics = dict((item.get("reference_metrics") or {}).get(row, {}))
            if evaluation is not None:
                row_metrics.update(evaluation.judge_reference(row, reference, item.get("utterance"), words))
            reference_rows.setdefault(row, {})[item["id"]] = row_metrics
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
        metrics["evaluation"] = evaluation.settings({item.get("words_of") for item in rendered})
    atomic_write_json(out_dir / "metrics.json", metrics)
    if writer is not None:
        scalars = {f"{tag}/{key}": value for key, value in metrics["mean"].items()}
        for row, rows in metrics["references"].items():
            scalars.update({f"{tag}/{row}/{key}": value for key, value in rows["mean"].items()})
        for embedder, figures in metrics.get("frechet", {}).items():
            scalars.update({f"{tag}/frechet_{embedder}/{key}": figures[key]
                            for key in ("distance", "floor")})
        for name, value in scalars.items():
            if value is not None:
                writer.add_scalar(name, value, epoch)
    return metrics

"""What every runner's `test` writes: wav, spectrogram PNG, metrics.json, TensorBoard."""

import math
from pathlib import Path

import numpy as np

from ..audio.io import write_wav
from ..audio.plots import png_to_array, save_spectrogram_comparison
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


def file_stem(utterance_id: str) -> str:
    return utterance_id.replace("/", "__")


def mean_metrics(per_utterance: dict[str, dict]) -> dict:
    keys = sorted({k for metrics in per_utterance.values() for k in metrics})
    means = {}
    for key in keys:
        values = [m[key] for m in per_utterance.values()
                  if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
        means[key] = float(np.mean(values)) if values else None
    return means


def write_results(out_dir: Path, epoch: int, sample_rate: int, rendered: list[dict],
                  writer=None, tag: str = "test") -> dict:
    """`rendered`: dicts with `id`, `audio` (generated), `reference`, `metrics`, optional `images`.

    Writes `<id>.wav`, `<id>.png` (generated vs reference spectrogram, or the
    given images) and `metrics.json` (per utterance and mean); mirrors audio,
    images and the mean metrics to TensorBoard when a writer is given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_utterance = {}
    for item in rendered:
        stem = file_stem(item["id"])
        audio = np.clip(np.asarray(item["audio"], dtype=np.float32), -1.0, 1.0)
        write_wav(out_dir / f"{stem}.wav", audio, sample_rate)
        if item.get("images") is not None:
            png = item["images"](out_dir / f"{stem}.png")
        else:
            png = save_spectrogram_comparison(out_dir / f"{stem}.png", audio, item["reference"],
                                              sample_rate)
        per_utterance[item["id"]] = item["metrics"]
        if writer is not None:
            # One tag per kind: TensorBoard files a tag under one plugin only.
            writer.add_audio(f"{tag}_audio/{stem}", audio, epoch, sample_rate=sample_rate)
            writer.add_image(f"{tag}_spectrogram/{stem}", png_to_array(png), epoch,
                             dataformats="HWC")
    metrics = {"epoch": epoch, "mean": mean_metrics(per_utterance), "utterances": per_utterance}
    atomic_write_json(out_dir / "metrics.json", metrics)
    if writer is not None:
        for key, value in metrics["mean"].items():
            if value is not None:
                writer.add_scalar(f"{tag}/{key}", value, epoch)
    return metrics

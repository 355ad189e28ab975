"""report.html of one experiment and the comparison page of several.

The pages are static HTML from the jinja2 templates in `templates/`, with
relative links only (audio, images and plots are files beside the page), so
the experiment folder can be zipped, sent and opened anywhere without a
server. Plots are PNGs written into `report/` inside the experiment.
"""

import datetime
import json
import os
from pathlib import Path
from urllib.parse import quote

import jinja2
import soundfile

from .. import __version__
from ..errors import UserError
from ..experiment.folder import Experiment
from ..files import atomic_write_bytes
from ..metrics.judges import JUDGES, judged
from . import collect
from .plots import judge_line_styles, safe_name, save_curves

REPORT_FILE = "report.html"
REPORT_DIR = "report"          # plots and recordings the report adds to the experiment


def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("samplernn_pase.report", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = format_number
    return environment


def format_number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def relative_href(path: Path, page_dir: Path) -> str:
    """A URL relative to the page (percent-encoded per path component)."""
    relative = os.path.relpath(Path(path).resolve(), Path(page_dir).resolve())
    return "/".join(quote(part) for part in Path(relative).parts)


def render_page(path: Path, template: str, **context) -> Path:
    page_dir = path.parent
    html = template_environment().get_template(template).render(
        href=lambda p: relative_href(p, page_dir), package_version=__version__,
        written=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), **context)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path


def clear_pngs(folder: Path) -> None:
    """Plots of an earlier report (a metric may have gone); only in the report's own folders."""
    if folder.is_dir():
        for png in folder.glob("*.png"):
            png.unlink()


# --- real recordings beside the generated audio ------------------------------------


class Recordings:
    """The real recording of a test utterance, cut to the span that was rendered, as a wav in
    `report/recordings/`, for results folders that have no `<stem>.real.wav` of their own.
    Needs the corpus (--data-path); without it the report says so and goes on."""

    def __init__(self, experiment: Experiment, data_path: Path | None):
        self.experiment = experiment
        self.data_path = data_path
        self.folder = experiment.root / REPORT_DIR / "recordings"
        index = experiment.data_index()
        self.ids = {collect.file_stem(u["id"]): u["id"] for u in index.get("utterances", [])}
        self.index = index
        self.store = None
        self.problem = None

    def add_to(self, section: collect.ResultSection) -> None:
        for result in section.utterances:
            if result.variant("real recording") is None and result.stem in self.ids and result.audio:
                num_samples = audio_length(result.audio[0].path)
                path = self.recording(result.stem, num_samples) if num_samples else None
                if path is not None:
                    result.audio.insert(1, collect.Media("real recording", path))

    def recording(self, stem: str, num_samples: int) -> Path | None:
        path = self.folder / f"{stem}.wav"
        if audio_length(path) == num_samples:
            return path
        if self.problem is not None:
            return None
        try:
            if self.store is None:
                from ..data.store import UtteranceStore
                if self.data_path is None:
                    raise UserError("no --data-path given")
                self.store = UtteranceStore(self.index, self.experiment.normalization(), self.data_path)
            audio = self.store.load(self.ids[stem]).audio[:num_samples]
        except (UserError, OSError, KeyError) as error:
            self.problem = f"real recordings not available ({error})"
            return None
        from ..audio.io import write_wav
        write_wav(path, audio, self.index["sample_rate"])
        return path


def audio_length(path: Path) -> int | None:
    """Samples in an audio file; None when it is missing or unreadable."""
    try:
        return soundfile.info(str(path)).frames
    except (RuntimeError, OSError):
        return None


# --- one experiment --------------------------------------------------------------------


def write_report(experiment: Experiment, data_path: Path | None = None) -> Path:
    """Write `experiments/<name>/report.html` (and its plots); returns its path."""
    experiment.require()
    config = experiment.config()
    index = experiment.data_index()
    plots_dir = experiment.root / REPORT_DIR / "plots"
    clear_pngs(plots_dir)
    checkpoints = experiment.checkpoint_index()
    best_epoch = checkpoints.get("best_epoch")
    loss = collect.loss_name(config)

    history = collect.training_history(experiment)
    epochs = collect.result_epochs(experiment)
    shown = shown_epochs(epochs, best_epoch)
    known_stems = [collect.file_stem(u["id"]) for u in index.get("utterances", [])]
    recordings = Recordings(experiment, data_path)
    shown_results = []
    for _, epoch in shown:
        results = collect.read_epoch_results(experiment, epoch, known_stems)
        for section in results.sections:
            recordings.add_to(section)
        shown_results.append(results)

    return render_page(
        experiment.root / REPORT_FILE, "experiment.html.j2",
        name=experiment.name, family=config.get("model", {}).get("type", "?"),
        config_text=json.dumps(config, indent=2), data=collect.data_summary(index),
        loss_name=loss, validation_name=collect.loss_name(config, validation=True), loss_plot=save_loss_plot(plots_dir, history, loss, best_epoch),
        judge_plots=judge_plots(experiment, plots_dir, best_epoch),
        answers=collect.answers(experiment, shown),
        history=history, best_epoch=best_epoch, latest_epoch=epochs[-1] if epochs else None,
        result_epochs=epochs, shown_results=shown_results,
        checkpoints=checkpoint_rows(experiment, checkpoints, best_epoch),
        partial_checkpoint=experiment.partial_checkpoint_path.is_file(),
        recordings_problem=recordings.problem)


def shown_epochs(epochs: list[int], best_epoch: int | None) -> list[tuple[str, int]]:
    """(label, epoch) of the epochs the report answers for: the latest with test results, and
    the best (lowest validation loss) when it has test results too."""
    shown = []
    if epochs:
        shown.append(("latest and best" if epochs[-1] == best_epoch else "latest", epochs[-1]))
    if best_epoch in epochs and best_epoch != epochs[-1]:
        shown.append(("best", best_epoch))
    return shown


def save_loss_plot(plots_dir: Path, history: list[dict], loss: str, best_epoch) -> Path | None:
    """The training and validation loss per epoch (None without history)."""
    if not history:
        return None
    return save_curves(plots_dir / "loss.png", f"loss per epoch ({loss})", loss, {
        "train": [(h["epoch"], h["train_loss"]) for h in history if collect.is_number(h.get("train_loss"))],
        "validation": [(h["epoch"], h["validation_loss"]) for h in history
                       if collect.is_number(h.get("validation_loss"))]}, best_epoch)


def judge_plots(experiment: Experiment, plots_dir: Path, best_epoch) -> list[tuple]:
    """(judge, PNG, its lines) of every judge over epochs: the model's curve, its reference rows
    dashed on the same axes."""
    plots = []
    for judge, lines in collect.judge_curves(experiment):
        lines = {label: points for label, points in lines.items() if points}
        ylabel = f"{judge.better} is better" if judge.better else judge.name
        path = save_curves(plots_dir / f"judge-{safe_name(judge.key)}.png", judge.name, ylabel, lines,
                           best_epoch, styles=judge_line_styles(lines))
        plots.append((judge, path, list(lines)))
    return plots


def checkpoint_rows(experiment: Experiment, checkpoints: dict, best_epoch) -> list[dict]:
    """One row per checkpoint of checkpoints/index.json, in epoch order: its files present."""
    rows = []
    for epoch_key, entry in sorted(checkpoints.get("epochs", {}).items(), key=lambda e: int(e[0])):
        epoch = int(epoch_key)
        rows.append({
            "epoch": epoch, "validation_loss": entry.get("validation_loss"),
            "iteration": entry.get("iteration"), "best": epoch == best_epoch,
            "file": experiment.checkpoint_path(epoch).is_file(),
            "release": experiment.release_path(epoch).is_file()})
    return rows


# --- several experiments side by side ----------------------------------------------------


def all_experiments(experiments_path: Path) -> list[str]:
    if not Path(experiments_path).is_dir():
        return []
    return sorted(p.name for p in Path(experiments_path).iterdir()
                  if not p.name.startswith(".") and (p / "config.json").is_file())


def write_comparison(experiments_path: Path, names: list[str], output: Path,
                     data_path: Path | None = None) -> Path:
    """One page: the experiments' metrics side by side and the same test utterances from each."""
    names = names or all_experiments(experiments_path)
    if not names:
        raise UserError(f"report --compare: no experiment in {experiments_path}")
    experiments = [Experiment(experiments_path, name).require() for name in names]
    output = Path(output)
    plots_dir = output.parent / f"{output.stem}_files"
    clear_pngs(plots_dir)

    columns, losses = [], {}
    for experiment in experiments:
        config = experiment.config()
        index = experiment.data_index()
        checkpoints = experiment.checkpoint_index()
        best_epoch = checkpoints.get("best_epoch")
        epochs = collect.result_epochs(experiment)
        epoch = best_epoch if best_epoch in epochs else (epochs[-1] if epochs else None)
        results = None
        if epoch is not None:
            results = collect.read_epoch_results(experiment, epoch,
                                                 [collect.file_stem(u["id"]) for u in index["utterances"]])
            Recordings(experiment, data_path).add_to(results.sections[0])
        history = collect.training_history(experiment)
        loss = collect.loss_name(config, validation=True)
        losses[f"{experiment.name} ({loss})"] = [(h["epoch"], h["validation_loss"]) for h in history
                                                 if collect.is_number(h.get("validation_loss"))]
        best_entry = checkpoints.get("epochs", {}).get(str(best_epoch), {})
        report_page = experiment.root / REPORT_FILE
        columns.append({
            "name": experiment.name, "family": config.get("model", {}).get("type", "?"),
            "epoch": epoch, "best_epoch": best_epoch, "epochs_trained": history[-1]["epoch"] if history else None,
            "best_validation_loss": best_entry.get("validation_loss"), "loss_name": loss,
            "report": report_page if report_page.is_file() else None,
            "judges": {judge.key: values for judge, values in
                       judged(collect.judged_metrics(experiment, epoch).get("", {}))} if results else {},
            "utterances": {u.stem: u for u in results.sections[0].utterances} if results else {}})

    loss_plot = None
    if any(losses.values()):
        loss_plot = save_curves(plots_dir / "validation_loss.png", "validation loss per epoch",
                                "validation loss", losses)
    # The judges (the model's figure, its reference rows' beside it) of each experiment.
    metric_rows = [(judge, [c["judges"].get(judge.key) for c in columns]) for judge in JUDGES
                   if any(judge.key in c["judges"] for c in columns)]
    stems = {stem for c in columns for stem in c["utterances"]}
    # Utterances most experiments rendered first: those are the ones to compare by ear.
    listening = []
    for stem in sorted(stems, key=lambda s: (-sum(s in c["utterances"] for c in columns), s)):
        results = [c["utterances"].get(stem) for c in columns]
        real = next((r.variant("real recording") for r in results if r and r.variant("real recording")), None)
        cells = [[m for m in r.audio if m.label != "real recording"] if r else None for r in results]
        listening.append({"stem": stem, "real": real, "cells": cells})
    return render_page(output, "compare.html.j2", columns=columns, metric_rows=metric_rows,
                       loss_plot=loss_plot, listening=listening)

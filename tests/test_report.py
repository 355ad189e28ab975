"""The experiment report and the comparison page, opened in a real headless Chromium.

Two tiny SampleRNN experiments are trained on the demo corpus through the
real CLI (train writes the report after each epoch's test); their folder is
zipped and unpacked elsewhere, and the pages are opened from file://, with no
server, as a user opens a shared experiment. JavaScript in the page then
reports whether every image and audio file loaded. Screenshots are written
to $REPORT_SCREENSHOTS (default: the test's temporary folder).
"""

import html.parser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from browser import MEDIA_CHECK, Browser, broken_media, find_chromium, non_relative_links
from test_cli_samplernn import Workspace, tiny_config


#: Reference rows written beside each rendering (runners/rendering.py).
REFERENCE_ROWS = (".real.wav", ".world.wav", ".griffin_lim.wav")


@pytest.fixture(scope="module")
def reports(tmp_path_factory, demo_data_path):
    space = Workspace(tmp_path_factory.mktemp("report"), demo_data_path)
    space.init("first", tiny_config(max_epochs=2))
    space.run("first", "train")
    # Same data and seed (so the same test utterances), another model width.
    second = tiny_config(max_epochs=1)
    second["model"]["rnn_hidden_size"] = 16
    space.init("second", second)
    space.run("second", "train")
    return space


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium is not installed (.ci/run installs it with apt-get)")
    with Browser(executable) as running:
        yield running


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def unzipped(folder: Path, destination: Path) -> Path:
    """`folder` as a user receives it: zipped, then unpacked somewhere else."""
    archive = shutil.make_archive(str(destination / folder.name), "zip", folder.parent, folder.name)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(destination / "unpacked")
    return destination / "unpacked" / folder.name


def test_report_page_loads_every_image_and_audio_in_chromium(reports, browser, tmp_path):
    root = reports.experiment("first")
    assert (root / "report.html").is_file()           # written by train after its test
    (root / "report.html").unlink()
    reports.run("first", "test", "--epoch", "1")      # and by every test
    assert (root / "report.html").is_file()
    index = json.loads((root / "checkpoints" / "index.json").read_text())

    copy = unzipped(root, tmp_path)
    browser.open((copy / "report.html").as_uri())
    found = browser.evaluate(MEDIA_CHECK)
    browser.screenshot(screenshot_dir(tmp_path) / "report.png")
    assert broken_media(found) == [] and non_relative_links(found) == []
    assert "loss-plot" in [image["id"] for image in found["images"]]
    # The latest epoch (2) and, if it differs, the best: every rendered wav has a player, and
    # each test utterance has its real recording beside it.
    shown = {2, index["best_epoch"]}
    sources = {audio["src"] for audio in found["audios"]}
    for epoch in shown:
        for wav in (root / "results" / f"epoch-{epoch}").glob("*.wav"):
            assert f"results/epoch-{epoch}/{wav.name}" in sources
            if not wav.name.endswith(REFERENCE_ROWS):   # a rendering: its recording beside it
                assert f"results/epoch-{epoch}/{wav.stem}.real.wav" in sources
    assert all(audio["duration"] > 0 for audio in found["audios"])
    spectrograms = [i for i in found["images"] if i["src"].startswith("results/")]
    assert len(spectrograms) == sum(len(list((root / "results" / f"epoch-{e}").glob("*.png"))) for e in shown)

    page = browser.evaluate("document.body.innerText")
    assert browser.evaluate("document.querySelector('details#config').open") is False
    for epoch, entry in index["epochs"].items():     # checkpoints with their validation loss
        assert f"{entry['validation_loss']:.4g}" in page
    assert browser.evaluate("document.querySelector('tr.best td').innerText.trim()") == \
        f"{index['best_epoch']} best"
    data = json.loads((root / "data.json").read_text())
    modeling = sum(s["set"] == "modeling" for s in data["speakers"])
    assert browser.evaluate("document.querySelector('table#speakers').rows[1].cells[1].innerText") \
        == str(modeling)
    # Answers first: the judges' table is the page's first table, above every plot.
    assert browser.evaluate("document.querySelector('table').id") == "answers-modeling"
    assert browser.evaluate("""document.querySelector('table.answers').compareDocumentPosition(
        document.querySelector('img')) & Node.DOCUMENT_POSITION_FOLLOWING""")

    # The check can fail: a missing recording and a missing plot are reported by name.
    (copy / "report" / "plots" / "loss.png").unlink()
    missing_wav = next((copy / "results" / "epoch-2").glob("*.real.wav"))
    missing_wav.unlink()
    browser.open((copy / "report.html").as_uri())
    assert sorted(broken_media(browser.evaluate(MEDIA_CHECK))) == [
        f"audio results/epoch-2/{missing_wav.name} (error 4)", "img report/plots/loss.png"]


def test_compare_page_puts_the_same_utterances_side_by_side(reports, browser, tmp_path):
    result = reports.run("first", "report", "--compare", "first", "second")
    page_path = reports.root / "experiments" / "compare.html"
    assert f"report: {page_path.relative_to(reports.root)}" in result.stdout

    copy = unzipped(reports.root / "experiments", tmp_path)
    browser.open((copy / "compare.html").as_uri())
    found = browser.evaluate(MEDIA_CHECK)
    browser.screenshot(screenshot_dir(tmp_path) / "compare.png")
    assert broken_media(found) == [] and non_relative_links(found) == []
    assert "loss-plot" in [image["id"] for image in found["images"]]
    assert {"first/report.html", "second/report.html"} <= set(found["links"])
    header = browser.evaluate("[...document.querySelectorAll('table.judges th')].map(t => t.innerText)")
    assert header == ["judge", "better", "first", "second"]
    # Every listening row: the real recording, then each experiment's rendering of that utterance.
    rows = browser.evaluate("""[...document.querySelectorAll('table.utterances tr')].slice(1).map(
        row => [...row.cells].slice(1).map(cell => [...cell.querySelectorAll('audio')].map(
            audio => audio.getAttribute('src'))))""")
    first = sorted(p.name for p in (reports.experiment("first") / "results" / "epoch-2").glob("*.wav")
                   if not p.name.endswith(REFERENCE_ROWS))
    assert len(rows) == len(first) == 2
    for row in rows:
        real, from_first, from_second = row
        name = from_first[0].rsplit("/", 1)[1]
        stem = name.removesuffix(".wav")
        assert len(real) == 1 and real[0].endswith((f"/{stem}.real.wav", f"/recordings/{name}"))
        assert f"first/results/epoch-{best_epoch(reports, 'first')}/{name}" in from_first
        assert f"second/results/epoch-1/{name}" in from_second

    # Without names: every experiment; the page may live anywhere (links stay relative).
    elsewhere = reports.root / "pages" / "all.html"
    reports.run("first", "report", "--compare", "--output", str(elsewhere))
    html = elsewhere.read_text()
    assert "../experiments/first/report.html" in html and "../experiments/second/report.html" in html


def best_epoch(space, name) -> int:
    return json.loads((space.experiment(name) / "checkpoints" / "index.json").read_text())["best_epoch"]


def test_report_shows_reference_rows_and_nested_metrics_generically(reports, tmp_path):
    """Results in the evaluation format (<stem>.real.wav, <stem>.world.wav, metrics.json with
    the model's means, reference rows and a per_utterance list) appear without a change to the
    report; only judges are plotted, each with its reference rows, speaker sets' subfolders
    adding lines and tables of their own."""
    source = reports.experiment("second")
    root = reports.root / "experiments" / "references"
    shutil.copytree(source, root)
    results = root / "results" / "epoch-1"
    stems = sorted(p.stem for p in results.glob("*.wav") if not p.name.endswith(REFERENCE_ROWS))
    for stem in stems:
        audio, rate = soundfile.read(results / f"{stem}.wav")
        soundfile.write(results / f"{stem}.real.wav", np.zeros_like(audio), rate)
        soundfile.write(results / f"{stem}.world.wav", np.zeros_like(audio), rate)

    def metrics_file(speaker_set, model_mcd):
        return {"epoch": 1, "speaker_set": speaker_set,
                "mean": {"mcd_db": model_mcd, "dnsmos_ovrl": 2.25, "seconds": 0.1, "note": "text"},
                "references": {"real": {"mean": {"mcd_db": 0.0, "dnsmos_ovrl": 3.5, "seconds": 0.1}},
                               "world": {"mean": {"mcd_db": 4.75, "dnsmos_ovrl": 3.0, "seconds": 0.1}}},
                "evaluation": {"analysis": {"sample_rate": 16000, "f0_ceil": 600}},
                "per_utterance": [{"id": stem, "mcd_db": 10.0 + i, "<b>odd</b>": 1.0}
                                  for i, stem in enumerate(stems)]}
    (results / "metrics.json").write_text(json.dumps(metrics_file("modeling", 11.5)))
    for folder, speaker_set in (("adaptation", "adaptation"), ("samples", "modeling")):
        (results / folder).mkdir(exist_ok=True)       # a speaker set's test; test_sample's folder
        (results / folder / "metrics.json").write_text(json.dumps(metrics_file(speaker_set, 13.0)))
    data = json.loads((root / "data.json").read_text())       # files left out, as prepare.py lists them
    data["report"]["dropped"] = {"bad_labels": ["demo/demo_f1/a.wav", "demo/demo_f1/b.wav"],
                                 "empty_audio": ["demo/demo_m1/c.wav"]}
    (root / "data.json").write_text(json.dumps(data))
    reports.run("references", "report")
    html = (root / "report.html").read_text()
    for stem in stems:
        for variant in ("", ".real", ".world"):
            assert f'src="results/epoch-1/{stem}{variant}.wav"' in html
        assert f"report/recordings/{stem}.wav" not in html      # the folder's own real recording wins
    for label in ("generated", "real recording", "WORLD resynthesis"):
        assert html.count(f"<span>{label}</span>") == len(stems)
    for key in ("mean.mcd_db", "mean.dnsmos_ovrl", "references.real.mean.dnsmos_ovrl", "references.world.mean.mcd_db"):
        assert f"<td>{key}</td>" in html                # every figure stays readable, in a table
    assert "mean.note" not in html and "<b>odd</b>" not in html and "&lt;b&gt;odd&lt;/b&gt;" in html
    # Plotted: the two judges and the loss; no setting, no seconds, no per-utterance curve.
    plots = sorted(p.name for p in (root / "report" / "plots").glob("*.png"))
    assert plots == ["judge-dnsmos_ovrl.png", "judge-mcd_db.png", "loss.png"]
    assert "left out: 3." in html and "bad_labels: 2 files" in html and "empty_audio: 1 file<" in html
    assert "<code>demo/demo_m1/c.wav</code>" in html
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.report.collect import judge_curves
    curves = {judge.key: lines for judge, lines in judge_curves(Experiment(reports.root / "experiments", "references"))}
    assert curves == {   # the real row's MCD (0 by definition) is no line; `samples/` is no speaker set
        "dnsmos_ovrl": {"model": [(1, 2.25)], "real": [(1, 3.5)], "world": [(1, 3.0)],
                        "adaptation: model": [(1, 2.25)], "adaptation: real": [(1, 3.5)],
                        "adaptation: world": [(1, 3.0)]},
        "mcd_db": {"model": [(1, 11.5)], "world": [(1, 4.75)],
                   "adaptation: model": [(1, 13.0)], "adaptation: world": [(1, 4.75)]}}
    tables = answer_cells(html)
    assert set(tables) == {"answers-modeling", "answers-adaptation"}
    assert tables["answers-adaptation"][("mcd_db", 1, "model")] == 13.0


class PageTables(html.parser.HTMLParser):
    """The answers tables' cells ({table id: {(judge, epoch, line): value}}, a cell without a
    value as None) and the judge plots ({judge: [lines]}) of a report page."""

    def __init__(self):
        super().__init__()
        self.tables, self.plots, self.table, self.judge = {}, {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "answers" in (attrs.get("class") or ""):
            self.table = self.tables.setdefault(attrs["id"], {})
        elif tag == "tr" and self.table is not None:
            self.judge = attrs.get("data-judge")
        elif tag == "td" and self.judge and "data-line" in attrs:
            value = attrs.get("data-value")
            self.table[(self.judge, int(attrs["data-epoch"]), attrs["data-line"])] = \
                None if value is None else float(value)
        elif tag == "img" and "judge-plot" in (attrs.get("class") or ""):
            self.plots[attrs["data-judge"]] = attrs["data-lines"].split("|")

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None


def answer_cells(page: str) -> dict:
    parser = PageTables()
    parser.feed(page)
    return parser.tables


def test_report_answers_first_then_one_plot_per_judge(reports):
    """The demo's report (SampleRNN, real metrics.json of a trained run): a table of the judges
    at the latest and the best epoch, the model beside its reference rows, with the values of
    metrics.json; one plot per judge with its reference lines, nothing else but the loss; and
    TensorBoard's charts grouped the same way."""
    from samplernn_pase.metrics.judges import JUDGES
    root = reports.experiment("first")
    reports.run("first", "report")
    page = (root / "report.html").read_text()
    parser = PageTables()
    parser.feed(page)
    metrics = {epoch: json.loads((root / "results" / f"epoch-{epoch}" / "metrics.json").read_text())
               for epoch in (1, 2)}
    rows = ["real", "world"]
    assert sorted(metrics[2]["references"]) == rows

    # One plot per judge (+ the loss): at most the judges' count, and these are judges for sure.
    plots = sorted(p.name for p in (root / "report" / "plots").glob("*.png"))
    assert len(plots) == len(parser.plots) + 1 <= len(JUDGES) + 1 and "loss.png" in plots
    assert {"mcd_db", "dnsmos_ovrl", "speaker_similarity_own", "frechet_log_mel", "nll_bits"} <= set(parser.plots)
    assert not [p for p in plots if any(word in p for word in ("seconds", "analysis", "generated", "demo_"))]
    for judge, lines in parser.plots.items():      # the reference lines of each judge
        expected = {"mcd_db": ["model", "world"], "vuv_error": ["model", "world"],
                    "f0_rmse_hz": ["model", "world"], "nll_bits": ["model"]}.get(
            judge, ["model", "real"] if judge.startswith("frechet_") else ["model", *rows])
        assert lines == expected, judge
        assert (root / "report" / "plots" / f"judge-{judge}.png").read_bytes().startswith(b"\x89PNG")

    # The answers: latest (2) and best epoch, every cell the value of metrics.json.
    index = json.loads((root / "checkpoints" / "index.json").read_text())
    cells = parser.tables["answers-modeling"]
    assert {epoch for _, epoch, _ in cells} == {2, index["best_epoch"]}
    assert "lowest validation nll_bits" in page and f"epoch {index['best_epoch']}" in page

    def expected_value(judge, epoch, line):
        figures = metrics[epoch]
        if judge.startswith("frechet_"):                 # against the real set: its floor
            distances = figures["frechet"][judge.removeprefix("frechet_")]
            return {"model": distances["distance"], "real": distances["floor"]}.get(line)
        if judge in ("mcd_db", "f0_rmse_hz", "vuv_error") and line == "real":
            return None                                  # 0 by definition: not an answer
        if judge == "nll_bits" and line != "model":
            return None                                  # the model's alone
        return (figures["mean"] if line == "model" else figures["references"][line]["mean"])[judge]
    assert {judge for judge, _, _ in cells} == set(parser.plots)
    for (judge, epoch, line), value in cells.items():
        assert value == expected_value(judge, epoch, line), (judge, epoch, line)
    assert ("dnsmos_ovrl", 2, "real") in cells and ("mcd_db", 2, "world") in cells

    # TensorBoard: one chart per judge, whose runs are the model and the reference rows.
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    runs = EventMultiplexer().AddRunsFromDirectory(str(root / "tensorboard"))
    runs.Reload()
    charts = {}
    for run, tags in runs.Runs().items():
        for tag in tags["scalars"]:
            if tag.startswith("test/"):
                charts.setdefault(tag, {})[run.rsplit("/", 1)[-1]] = \
                    {event.step: event.value for event in runs.Scalars(run, tag)}
    assert set(charts) == {f"test/{judge}" for judge in parser.plots}
    for judge, lines in parser.plots.items():
        assert sorted(charts[f"test/{judge}"]) == sorted(lines)
    assert charts["test/dnsmos_ovrl"]["real"][2] == pytest.approx(
        metrics[2]["references"]["real"]["mean"]["dnsmos_ovrl"], rel=1e-6)
    assert charts["test/mcd_db"]["model"][1] == pytest.approx(metrics[1]["mean"]["mcd_db"], rel=1e-6)


def test_report_errors_are_one_line(reports):
    unknown = reports.run("first", "report", "--compare", "first", "nowhere", check=False)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "nowhere" in unknown.stderr
    nameless = subprocess.run([sys.executable, "-m", "samplernn_pase", "report"], cwd=reports.root,
                              capture_output=True, text=True, env=reports.env())
    assert nameless.returncode == 2 and "--experiment-name" in nameless.stderr.splitlines()[-1]

"""The experiment report and the comparison page, opened in a real headless Chromium.

Two tiny SampleRNN experiments are trained on the demo corpus through the
real CLI (train writes the report after each epoch's test); their folder is
zipped and unpacked elsewhere, and the pages are opened from file://, with no
server, as a user opens a shared experiment. JavaScript in the page then
reports whether every image and audio file loaded. Screenshots are written
to $REPORT_SCREENSHOTS (default: the test's temporary folder).
"""

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
    assert browser.evaluate("[...document.querySelectorAll('table')][0].rows[1].cells[1].innerText") \
        == str(modeling)

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
    header = browser.evaluate("[...document.querySelectorAll('table.metrics th')].map(t => t.innerText)")
    assert header == ["metric", "first", "second"]
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
    model / real / world sections and a per_utterance list) appear without a change to the report."""
    source = reports.experiment("second")
    root = reports.root / "experiments" / "references"
    shutil.copytree(source, root)
    results = root / "results" / "epoch-1"
    stems = sorted(p.stem for p in results.glob("*.wav") if not p.name.endswith(REFERENCE_ROWS))
    for stem in stems:
        audio, rate = soundfile.read(results / f"{stem}.wav")
        soundfile.write(results / f"{stem}.real.wav", np.zeros_like(audio), rate)
        soundfile.write(results / f"{stem}.world.wav", np.zeros_like(audio), rate)
    metrics = {"epoch": 1, "model": {"mcd_db": 11.5, "dnsmos": {"ovrl": 2.25}, "note": "text"},
               "real": {"mcd_db": 0.0, "dnsmos": {"ovrl": 3.5}},
               "world": {"mcd_db": 4.75, "dnsmos": {"ovrl": 3.0}},
               "per_utterance": [{"id": stem, "mcd_db": 10.0 + i, "<b>odd</b>": 1.0}
                                 for i, stem in enumerate(stems)]}
    (results / "metrics.json").write_text(json.dumps(metrics))
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
    for key in ("model.mcd_db", "model.dnsmos.ovrl", "real.dnsmos.ovrl", "world.mcd_db"):
        assert f"<td>{key}</td>" in html
    assert "model.note" not in html and "<b>odd</b>" not in html and "&lt;b&gt;odd&lt;/b&gt;" in html
    assert (root / "report" / "plots" / "metric-dnsmos.ovrl.png").is_file()
    assert "left out: 3." in html and "bad_labels: 2 files" in html and "empty_audio: 1 file<" in html
    assert "<code>demo/demo_m1/c.wav</code>" in html
    from samplernn_pase.experiment.folder import Experiment
    from samplernn_pase.report.collect import metrics_over_epochs
    curves = metrics_over_epochs(Experiment(reports.root / "experiments", "references"))
    assert curves["mcd_db"] == {"model": [(1, 11.5)], "real": [(1, 0.0)], "world": [(1, 4.75)]}


def test_report_errors_are_one_line(reports):
    unknown = reports.run("first", "report", "--compare", "first", "nowhere", check=False)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "nowhere" in unknown.stderr
    nameless = subprocess.run([sys.executable, "-m", "samplernn_pase", "report"], cwd=reports.root,
                              capture_output=True, text=True, env=reports.env())
    assert nameless.returncode == 2 and "--experiment-name" in nameless.stderr.splitlines()[-1]

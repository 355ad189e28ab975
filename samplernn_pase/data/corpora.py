"""Corpus readers: each turns a folder into speakers (with gender) and utterances.

Every reader returns a `Corpus`; ids are made unique across corpora by the
corpus name (the `name` of the corpora entry, else its type):
speaker id `<name>_<speaker>`, utterance id `<name>_<file stem>` when the stem
already starts with the speaker (VCTK `p225_001`, demo `f1_001`), else
`<name>_<speaker>_<stem>` (ARCTIC `arctic_a0001`). An HTS full-context `.lab`
file beside an audio file (same stem) is taken as its labels.

Layouts:
- vctk: 0.80 `wav48/pNNN/pNNN_MMM.wav` or 0.92 `wav48_silence_trimmed/pNNN/pNNN_MMM_mic1.flac`
  (`vctk_mic` picks mic1/mic2), genders from `speaker-info.txt`.
- cmu_arctic: `cmu_us_<spk>_arctic/wav/*.wav` folders (or `path` is one such folder);
  genders of the 18 ARCTIC voices are known. Labels: a `.lab` beside the audio, else
  `lab/<stem>.lab` when it is an HTS full-context file (phone or state level, as
  HTS-demo or Merlin write them); the corpus's own `lab/` files are Festival
  segment labels, not full-context ones, and are passed over.
- ljspeech: `metadata.csv` (id|text|normalized text) + `wavs/<id>.wav`; one female speaker.
- folder: `<speaker>/<utterance>.wav|.flac` with an optional `speakers.csv` (id,gender).
- demo: the embedded eSpeak NG corpus (demo_corpus.py), built on first use.

Transcripts (`SourceUtterance.text`, None where the corpus has none): a `.txt`
beside the audio for `folder` and the demo; VCTK's `txt/<speaker>/<stem>.txt`;
ARCTIC's prompts `etc/txt.done.data`, lines `( arctic_a0001 "Author of the ...
etc." )`; LJSpeech's third metadata field, the text with numbers and
abbreviations spelled out (the second when the third is empty).
"""

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .hts_labels import is_full_context_file

AUDIO_EXTENSIONS = (".wav", ".flac")
CORPUS_TYPES = ("demo", "vctk", "cmu_arctic", "ljspeech", "folder")
BUILT_CORPORA = ("demo",)   # built by the package inside --data-path (created if missing)
ARCTIC_GENDERS = {"aew": "m", "ahw": "m", "aup": "m", "awb": "m", "axb": "f", "bdl": "m", "clb": "f",
                  "eey": "f", "fem": "m", "gka": "m", "jmk": "m", "ksp": "m", "ljm": "f", "lnh": "f",
                  "rms": "m", "rxr": "m", "slp": "f", "slt": "f"}


@dataclass
class SourceUtterance:
    id: str
    speaker: str
    audio: Path
    labels: Path | None
    text: str | None = None     # what is said, as the corpus writes it


@dataclass
class Corpus:
    name: str
    speakers: dict[str, str | None] = field(default_factory=dict)  # speaker id -> "f" | "m" | None
    utterances: list[SourceUtterance] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # files the corpus lists but that do not exist


def normalize_gender(text: str | None) -> str | None:
    text = (text or "").strip().lower()
    if text in ("f", "female", "w", "woman"):
        return "f"
    if text in ("m", "male", "man"):
        return "m"
    return None


def _labels_beside(audio: Path, *stems: str) -> Path | None:
    for stem in (audio.stem, *stems):
        candidate = audio.with_name(stem + ".lab")
        if candidate.exists():
            return candidate
    return None


def read_transcript(path: Path) -> str | None:
    """The text of a one-utterance transcript file (lines joined), None when absent or empty."""
    try:
        text = " ".join(Path(path).read_text(encoding="utf-8", errors="replace").split())
    except OSError:             # absent (or unreadable): no transcript, as for a corpus without them
        return None
    return text or None


_PROMPT_LINE = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)\s*$')


def read_arctic_prompts(path: Path) -> dict[str, str]:
    """{utterance stem: text} of a Festival prompt file (ARCTIC's etc/txt.done.data):
    one `( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )` per line,
    with `\\"` for a quote inside the text."""
    prompts = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        match = _PROMPT_LINE.match(line.strip())
        if match:
            prompts[match.group(1)] = re.sub(r'\\(.)', r"\1", match.group(2)).strip()
    return prompts


def read_ljspeech_metadata(path: Path) -> list[tuple[str, str | None]]:
    """(stem, text) of every line of LJSpeech's metadata.csv (`id|text|normalized text`, no
    quoting: the texts hold bare `"`): the normalized text, else the text, else None."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if not fields[0]:
            continue
        text = next((f for f in reversed(fields[1:3]) if f), None)
        rows.append((fields[0], text))
    return rows


class _Builder:
    def __init__(self, name: str):
        self.corpus = Corpus(name)

    def speaker(self, raw: str, gender: str | None) -> str:
        speaker_id = f"{self.corpus.name}_{raw}"
        self.corpus.speakers.setdefault(speaker_id, gender)
        return speaker_id

    def utterance(self, raw_speaker: str, stem: str, audio: Path, labels: Path | None,
                  text: str | None = None) -> None:
        speaker_id = f"{self.corpus.name}_{raw_speaker}"
        utterance_id = f"{self.corpus.name}_{stem}" if stem.startswith(raw_speaker) else f"{speaker_id}_{stem}"
        self.corpus.utterances.append(SourceUtterance(utterance_id, speaker_id, audio, labels, text))


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def read_vctk(root: Path, name: str, mic: str = "mic1") -> Corpus:
    builder = _Builder(name)
    genders = {}
    info = root / "speaker-info.txt"
    if info.exists():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0].upper() not in ("ID", "ID:"):
                raw = parts[0] if not parts[0].isdigit() else f"p{parts[0]}"
                genders[raw] = normalize_gender(parts[2])
    if (root / "wav48_silence_trimmed").is_dir():
        audio_root, suffix = root / "wav48_silence_trimmed", f"_{mic}"
    elif (root / "wav48").is_dir():
        audio_root, suffix = root / "wav48", ""
    else:
        raise UserError(f"{root}: not a VCTK folder (no wav48/ nor wav48_silence_trimmed/)")
    for folder in sorted(p for p in audio_root.iterdir() if p.is_dir()):
        raw = folder.name
        builder.speaker(raw, genders.get(raw))
        for audio in _audio_files(folder):
            stem = audio.stem
            if suffix:
                if not stem.endswith(suffix):
                    continue
                stem = stem[: -len(suffix)]
            builder.utterance(raw, stem, audio, _labels_beside(audio, stem),
                              read_transcript(root / "txt" / raw / f"{stem}.txt"))
    return builder.corpus


def read_cmu_arctic(root: Path, name: str) -> Corpus:
    builder = _Builder(name)
    pattern = re.compile(r"^cmu_us_(\w+?)_arctic$")
    folders = [root] if pattern.match(root.name) else sorted(p for p in root.iterdir() if pattern.match(p.name))
    if not folders:
        raise UserError(f"{root}: not a CMU ARCTIC folder (no cmu_us_<speaker>_arctic/)")
    for folder in folders:
        raw = pattern.match(folder.name).group(1)
        builder.speaker(raw, ARCTIC_GENDERS.get(raw))
        wav_folder = folder / "wav"
        if not wav_folder.is_dir():
            raise UserError(f"{folder}: no wav/ folder")
        listed, texts = None, {}
        prompts = folder / "etc" / "txt.done.data"
        if prompts.exists():
            listed = re.findall(r"^\(\s*(\S+)", prompts.read_text(encoding="utf-8", errors="replace"), re.M)
            texts = read_arctic_prompts(prompts)
        files = {p.stem: p for p in _audio_files(wav_folder)}
        for stem in (listed if listed is not None else sorted(files)):
            if stem not in files:
                builder.corpus.missing.append(str(wav_folder / f"{stem}.wav"))
                continue
            labels = _labels_beside(files[stem])
            in_lab_folder = folder / "lab" / f"{stem}.lab"
            if labels is None and is_full_context_file(in_lab_folder):
                labels = in_lab_folder
            builder.utterance(raw, stem, files[stem], labels, texts.get(stem))
    return builder.corpus


def read_ljspeech(root: Path, name: str) -> Corpus:
    builder = _Builder(name)
    metadata = root / "metadata.csv"
    if not metadata.exists():
        raise UserError(f"{metadata}: not found (an LJSpeech folder has metadata.csv and wavs/)")
    builder.speaker("LJ", "f")
    for stem, text in read_ljspeech_metadata(metadata):
        audio = root / "wavs" / f"{stem}.wav"
        if not audio.exists():
            builder.corpus.missing.append(str(audio))
            continue
        builder.utterance("LJ", stem, audio, _labels_beside(audio), text)
    return builder.corpus


def read_speakers_csv(path: Path) -> dict[str, str | None]:
    genders = {}
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.reader(file):
            if len(row) >= 2 and row[0].strip() and row[0].strip().lower() not in ("id", "speaker"):
                genders[row[0].strip()] = normalize_gender(row[1])
    return genders


def read_folder(root: Path, name: str) -> Corpus:
    builder = _Builder(name)
    genders = read_speakers_csv(root / "speakers.csv") if (root / "speakers.csv").exists() else {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _audio_files(folder)
        if not files:
            continue
        builder.speaker(folder.name, genders.get(folder.name))
        for audio in files:
            builder.utterance(folder.name, audio.stem, audio, _labels_beside(audio),
                              read_transcript(audio.with_suffix(".txt")))
    return builder.corpus


def read_corpus(entry: dict, data_path: Path, data_config: dict, log=None) -> Corpus:
    """The corpus of one `data.corpora` entry ({"type", "path", "name"?})."""
    kind = entry["type"]
    if kind not in CORPUS_TYPES:
        raise UserError(f"data.corpora: unknown corpus type {kind!r} (known: {', '.join(CORPUS_TYPES)})")
    root = Path(data_path) / entry["path"]
    name = entry.get("name") or kind
    if kind == "demo":
        from .demo_corpus import build_demo_corpus

        demo = data_config["demo"]
        build_demo_corpus(root, demo["num_speakers"], demo["sentences_per_speaker"], data_config["sample_rate"], log,
                          demo["more_sentences"])
    if not root.is_dir():
        raise UserError(f"{root}: corpus folder not found (data.corpora entry of type {kind!r})")
    if kind == "vctk":
        return read_vctk(root, name, data_config["vctk_mic"])
    if kind == "cmu_arctic":
        return read_cmu_arctic(root, name)
    if kind == "ljspeech":
        return read_ljspeech(root, name)
    return read_folder(root, name)

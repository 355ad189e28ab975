"""HTS full-context labels, as Festival + HTS-demo and Merlin write them (English, HTS-2.x).

A label line is `start end context`, times in units of 100 ns. The context is
53 fields in 11 sections (field meanings: docs/linguistic_features.md):

    p1^p2-p3+p4=p5@p6_p7/A:a1_a2_a3
    /B:b1-b2-b3@b4-b5&b6-b7#b8-b9$b10-b11!b12-b13;b14-b15|b16/C:c1+c2+c3/D:d1_d2
    /E:e1+e2@e3+e4&e5+e6#e7+e8/F:f1_f2/G:g1_g2/H:h1=h2@h3=h4|h5/I:i1=i2/J:j1+j2-j3

for example (Merlin's `slt_arctic` labels)

    2050000 3400000 sil^sil-ao+th=er@1_2/A:0_0_0/B:1-1-2@1-2&1-7#1-4$1-3!0-2;0-4|ao/C:0+0+1
    /D:0_0/E:content+2@1+5&1+2#0+3/F:in_1/G:0_0/H:7=5@1=2|L-L%/I:7=3/J:14+8-2

(one line in the file). `x` marks a field that does not apply (the syllable
fields of a pause); a missing neighbour is usually `0`. State-level files (the
output of forced alignment) repeat each phone on one line per HMM state, the
context followed by `[2]` .. `[6]`; they are merged back into phones.

The seed's linguistic input has 55 columns per frame (`COLUMNS`): the phone's
duration, the frame's position in the phone, then the 53 fields in layout
order. 10 fields are symbols (`CATEGORICAL_TABLES`) looked up in four tables
shared by fields of one kind: phoneme (p1-p5), vowel (b16), part of speech
(d1, e1, f1) and ToBI end tone (h5). The other 45 columns are numbers
(`FRAME_REAL_FIELDS`); `x` there becomes 0.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HTS_TIME_UNITS_PER_SECOND = 10_000_000

# Section by section: the prefix, then each field with the separator that follows it.
_SECTIONS = [
    ("", [("p1", "^"), ("p2", "-"), ("p3", "+"), ("p4", "="), ("p5", "@"), ("p6", "_"), ("p7", "")]),
    ("/A:", [("a1", "_"), ("a2", "_"), ("a3", "")]),
    ("/B:", [("b1", "-"), ("b2", "-"), ("b3", "@"), ("b4", "-"), ("b5", "&"), ("b6", "-"), ("b7", "#"),
             ("b8", "-"), ("b9", "$"), ("b10", "-"), ("b11", "!"), ("b12", "-"), ("b13", ";"), ("b14", "-"),
             ("b15", "|"), ("b16", "")]),
    ("/C:", [("c1", "+"), ("c2", "+"), ("c3", "")]),
    ("/D:", [("d1", "_"), ("d2", "")]),
    ("/E:", [("e1", "+"), ("e2", "@"), ("e3", "+"), ("e4", "&"), ("e5", "+"), ("e6", "#"), ("e7", "+"),
             ("e8", "")]),
    ("/F:", [("f1", "_"), ("f2", "")]),
    ("/G:", [("g1", "_"), ("g2", "")]),
    ("/H:", [("h1", "="), ("h2", "@"), ("h3", "="), ("h4", "|"), ("h5", "")]),
    ("/I:", [("i1", "="), ("i2", "")]),
    ("/J:", [("j1", "+"), ("j2", "-"), ("j3", "")]),
]
FIELDS = [name for _, section in _SECTIONS for name, _ in section]

# Categorical fields and the shared embedding table each one indexes (the seed's four tables).
TABLES = ("phoneme", "vowel", "pos", "tobi")
CATEGORICAL_TABLES = {"p1": "phoneme", "p2": "phoneme", "p3": "phoneme", "p4": "phoneme", "p5": "phoneme",
                      "b16": "vowel", "d1": "pos", "e1": "pos", "f1": "pos", "h5": "tobi"}
CATEGORICAL_FIELDS = list(CATEGORICAL_TABLES)
LABEL_REAL_FIELDS = [name for name in FIELDS if name not in CATEGORICAL_TABLES]           # 43
FRAME_REAL_FIELDS = ["phone_duration", "position_in_phone"] + LABEL_REAL_FIELDS          # 45
COLUMNS = ["phone_duration", "position_in_phone"] + FIELDS                               # 55, the seed's order
# Real columns already in [0, 1] that the seed leaves unnormalized: the position and the stress/accent flags.
UNNORMALIZED_FIELDS = ("position_in_phone", "a1", "a2", "b1", "b2", "c1", "c2")

NOT_APPLICABLE = "x"
UNKNOWN_SYMBOL = "<unknown>"   # vocabulary entry for symbols not seen at `init`


def _section_pattern(prefix: str, section: list[tuple[str, str]]) -> re.Pattern:
    body = "".join(f"(?P<{name}>[^/]+?){re.escape(separator)}" for name, separator in section)
    return re.compile(f"^{body}$")


_SECTION_PATTERNS = [(prefix, _section_pattern(prefix, section)) for prefix, section in _SECTIONS]
_SECTION_LAYOUT = {prefix: prefix + "".join(name + separator for name, separator in section)
                   for prefix, section in _SECTIONS}
_SECTION_SPLIT = re.compile(r"(/[A-Z]:)")
_STATE_SUFFIX = re.compile(r"\[(\d+)\]$")


class LabelError(Exception):
    """The label file is not in the HTS full-context format."""


@dataclass
class PhoneLabels:
    """Phone-level labels of one utterance."""
    starts: np.ndarray        # (P,) seconds
    ends: np.ndarray          # (P,) seconds
    categorical: np.ndarray   # (P, len(CATEGORICAL_FIELDS)) unicode symbols
    real: np.ndarray          # (P, len(LABEL_REAL_FIELDS)) float32

    @property
    def duration(self) -> float:
        return float(self.ends[-1]) if len(self.ends) else 0.0

    @property
    def phone_durations(self) -> np.ndarray:
        return (self.ends - self.starts).astype(np.float32)


def parse_context(context: str) -> tuple[dict[str, str], int | None]:
    """Field values of one full-context string and its state index (None for phone level)."""
    context = context.strip()
    state = None
    suffix = _STATE_SUFFIX.search(context)
    if suffix:
        state, context = int(suffix.group(1)), context[: suffix.start()]
    pieces = _SECTION_SPLIT.split(context)
    prefixes = [""] + pieces[1::2]
    expected = [prefix for prefix, _ in _SECTIONS]
    if prefixes != expected:
        shown = "".join(prefixes[1:]) or "none"
        raise LabelError(f"not an HTS full-context label (sections {shown}, expected /A: .. /J:): "
                         f"{context[:60]!r}")
    fields = {}
    for (prefix, pattern), body in zip(_SECTION_PATTERNS, pieces[0::2]):
        match = pattern.match(body)
        if match is None:
            raise LabelError(f"section {prefix or 'p'} is {prefix + body!r}; the HTS layout is "
                             f"{_SECTION_LAYOUT[prefix]!r}")
        fields.update(match.groupdict())
    return fields, state


def _real_value(name: str, text: str) -> float:
    if text == NOT_APPLICABLE:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise LabelError(f"field {name} is {text!r}, not a number or {NOT_APPLICABLE}") from None


def parse_lines(lines: list[str]) -> PhoneLabels:
    """Phone-level labels from the lines of a phone- or state-level label file."""
    starts, ends, contexts, reals = [], [], [], []
    previous = None  # (context without state, state) of the last line
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise LabelError(f"line {number}: expected 'start end context', got {line.strip()[:60]!r}")
        try:
            start, end = int(parts[0]), int(parts[1])
        except ValueError:
            raise LabelError(f"line {number}: times must be integers (100 ns units)") from None
        try:
            fields, state = parse_context(parts[2])
            numbers = [_real_value(name, fields[name]) for name in LABEL_REAL_FIELDS]
        except LabelError as error:
            raise LabelError(f"line {number}: {error}") from None
        context = _STATE_SUFFIX.sub("", parts[2])
        # States of one phone share its context and count up; a later state only extends the phone.
        if state is not None and previous is not None and previous[1] is not None \
                and context == previous[0] and state > previous[1]:
            ends[-1] = end
        else:
            starts.append(start)
            ends.append(end)
            contexts.append(fields)
            reals.append(numbers)
        previous = (context, state)
    if not contexts:
        raise LabelError("no label lines")
    starts_array = np.asarray(starts, dtype=np.float64) / HTS_TIME_UNITS_PER_SECOND
    ends_array = np.asarray(ends, dtype=np.float64) / HTS_TIME_UNITS_PER_SECOND
    if np.any(ends_array < starts_array) or np.any(np.diff(starts_array) < 0):
        raise LabelError("times are not increasing")
    categorical = np.array([[fields[name] for name in CATEGORICAL_FIELDS] for fields in contexts],
                           dtype=str).reshape(len(contexts), len(CATEGORICAL_FIELDS))
    real = np.array(reals, dtype=np.float32).reshape(len(contexts), len(LABEL_REAL_FIELDS))
    return PhoneLabels(starts_array, ends_array, categorical, real)


def read_labels(path: Path) -> PhoneLabels:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError(f"cannot read ({error})") from None
    return parse_lines(text.splitlines())


def word_end_times(labels: PhoneLabels) -> np.ndarray:
    """(W,) seconds at which each word of the utterance ends, in order: the ends of the
    phones that close a word, i.e. the last phone of its syllable (p7 = 1) in the last
    syllable of its word (b5 = 1). Pauses have x (0) there and close nothing."""
    real = labels.real
    last_in_syllable = real[:, LABEL_REAL_FIELDS.index("p7")] == 1
    last_in_word = real[:, LABEL_REAL_FIELDS.index("b5")] == 1
    return labels.ends[last_in_syllable & last_in_word]


def is_full_context_file(path: Path) -> bool:
    """Whether a .lab file looks like HTS full-context labels (its first line has a /A: section),
    as opposed to, say, the Festival segment labels in CMU ARCTIC's own lab/ folder."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.strip():
                    return "/A:" in line
    except OSError:
        return False
    return False


def frame_alignment(labels: PhoneLabels, num_frames: int, hop_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """For every frame, the phone it falls in (by its centre time) and its relative
    position inside that phone in [0, 1). Frames past the last phone get the last phone."""
    centres = (np.arange(num_frames) + 0.5) * hop_seconds
    phone = np.searchsorted(labels.starts, centres, side="right") - 1
    phone = np.clip(phone, 0, len(labels.starts) - 1)
    lengths = np.maximum(labels.ends[phone] - labels.starts[phone], 1e-9)
    position = np.clip((centres - labels.starts[phone]) / lengths, 0.0, 0.999999)
    return phone.astype(np.int32), position.astype(np.float32)


def format_context(fields: dict[str, object]) -> str:
    """The full-context string of a phone from its field values (missing fields are `x`)."""
    return "".join(prefix + "".join(f"{fields.get(name, NOT_APPLICABLE)}{separator}" for name, separator in section)
                   for prefix, section in _SECTIONS)

"""HTS full-context labels (the 55-field Merlin / HTS-demo English format).

A label line is `start end context`, times in units of 100 ns, and the context is

    p1^p2-p3+p4=p5@p6_p7/A:a1_a2_a3/B:b1-b2-b3@b4-b5&b6-b7#b8-b9$b10-b11!b12-b13;b14-b15|b16
    /C:c1+c2+c3/D:d1_d2/E:e1+e2@e3+e4&e5+e6#e7+e8/F:f1_f2/G:g1_g2/H:h1=h2@h3=h4|h5/I:i1_i2/J:j1+j2-j3

(2 times + 53 context fields = 55). State-level files repeat each phone on 5
lines whose context ends in `[2]` .. `[6]`; they are merged back into phones.

Categorical fields (`CATEGORICAL_FIELDS`: quinphone p1-p5, vowel of the syllable
b16, guessed part of speech of previous/current/next word d1/e1/f1, ToBI end tone
h5) are kept as symbols; the vocabularies are built at `init` from the corpus,
index 0 being `x` (absent) or unknown. The other 43 fields are numbers
(`REAL_FIELDS`); `x` there becomes 0. At the frame rate a 44th real feature,
`position_in_phone` in [0, 1), says how far into its phone a frame is.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HTS_TIME_UNITS_PER_SECOND = 10_000_000

# Field names in order of appearance, with the delimiter that follows each.
_LAYOUT = [
    ("p1", "^"), ("p2", "-"), ("p3", "+"), ("p4", "="), ("p5", "@"), ("p6", "_"), ("p7", "/A:"),
    ("a1", "_"), ("a2", "_"), ("a3", "/B:"),
    ("b1", "-"), ("b2", "-"), ("b3", "@"), ("b4", "-"), ("b5", "&"), ("b6", "-"), ("b7", "#"),
    ("b8", "-"), ("b9", "$"), ("b10", "-"), ("b11", "!"), ("b12", "-"), ("b13", ";"), ("b14", "-"),
    ("b15", "|"), ("b16", "/C:"),
    ("c1", "+"), ("c2", "+"), ("c3", "/D:"),
    ("d1", "_"), ("d2", "/E:"),
    ("e1", "+"), ("e2", "@"), ("e3", "+"), ("e4", "&"), ("e5", "+"), ("e6", "#"), ("e7", "+"), ("e8", "/F:"),
    ("f1", "_"), ("f2", "/G:"),
    ("g1", "_"), ("g2", "/H:"),
    ("h1", "="), ("h2", "@"), ("h3", "="), ("h4", "|"), ("h5", "/I:"),
    ("i1", "_"), ("i2", "/J:"),
    ("j1", "+"), ("j2", "-"), ("j3", ""),
]
FIELDS = [name for name, _ in _LAYOUT]
CATEGORICAL_FIELDS = ["p1", "p2", "p3", "p4", "p5", "b16", "d1", "e1", "f1", "h5"]
REAL_FIELDS = [name for name in FIELDS if name not in CATEGORICAL_FIELDS]
FRAME_REAL_FIELDS = REAL_FIELDS + ["position_in_phone"]
UNKNOWN = "x"

_CONTEXT_PATTERN = re.compile(
    "^" + "".join(f"(?P<{name}>.*?){re.escape(sep)}" for name, sep in _LAYOUT[:-1])
    + f"(?P<{_LAYOUT[-1][0]}>[^/\\[]*?)(?:\\[(?P<state>\\d+)\\])?$"
)


class LabelError(Exception):
    """The label file is not in the expected HTS full-context format."""


@dataclass
class PhoneLabels:
    """Phone-level labels of one utterance."""
    starts: np.ndarray        # (P,) seconds
    ends: np.ndarray          # (P,) seconds
    categorical: np.ndarray   # (P, len(CATEGORICAL_FIELDS)) unicode symbols
    real: np.ndarray          # (P, len(REAL_FIELDS)) float32

    @property
    def duration(self) -> float:
        return float(self.ends[-1]) if len(self.ends) else 0.0


def parse_context(context: str) -> tuple[dict[str, str], int | None]:
    """Field values of one full-context string and its state index (None for phone level)."""
    match = _CONTEXT_PATTERN.match(context.strip())
    if match is None:
        raise LabelError(f"not an HTS full-context label: {context[:60]!r}")
    fields = {name: match.group(name) for name in FIELDS}
    state = match.group("state")
    return fields, (int(state) if state is not None else None)


def _real_value(text: str) -> float:
    if text in ("", UNKNOWN):
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise LabelError(f"expected a number or x, got {text!r}") from None


def parse_lines(lines: list[str]) -> PhoneLabels:
    """Phone-level labels from the lines of a phone- or state-level label file."""
    starts, ends, contexts = [], [], []
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
        fields, state = parse_context(parts[2])
        # State-level: states of one phone share the context; the first state opens
        # the phone, later states only extend its end.
        if state is not None and contexts and state != 2 and contexts[-1][1] == parts[2].rsplit("[", 1)[0]:
            ends[-1] = end
            continue
        starts.append(start)
        ends.append(end)
        contexts.append((fields, parts[2].rsplit("[", 1)[0] if state is not None else parts[2]))
    if not contexts:
        raise LabelError("no label lines")
    starts_array = np.asarray(starts, dtype=np.float64) / HTS_TIME_UNITS_PER_SECOND
    ends_array = np.asarray(ends, dtype=np.float64) / HTS_TIME_UNITS_PER_SECOND
    if np.any(ends_array < starts_array) or np.any(np.diff(starts_array) < 0):
        raise LabelError("times are not increasing")
    categorical = np.array([[fields[name] or UNKNOWN for name in CATEGORICAL_FIELDS] for fields, _ in contexts],
                           dtype=str).reshape(len(contexts), len(CATEGORICAL_FIELDS))
    real = np.array([[_real_value(fields[name]) for name in REAL_FIELDS] for fields, _ in contexts],
                    dtype=np.float32).reshape(len(contexts), len(REAL_FIELDS))
    return PhoneLabels(starts_array, ends_array, categorical, real)


def read_labels(path: Path) -> PhoneLabels:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError(f"cannot read ({error})") from None
    return parse_lines(text.splitlines())


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
    return "".join(f"{fields.get(name, UNKNOWN)}{sep}" for name, sep in _LAYOUT)

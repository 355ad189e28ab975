"""The HTS full-context parser on lines as Festival + HTS-demo and Merlin write them.

The utterance "Take the bus, then walk." (radio phone set, two intonation
phrases: "take the bus" ending L-H%, "then walk" ending L-L%) was labelled by
hand from the HTS-2.x English layout (lab_format of HTS-demo, the questions of
Merlin's questions-radio_dnn_416.hed): syllables take(ey, stressed, accented),
the(ax), bus(ah, stressed, accented), then(eh, stressed), walk(ao, stressed,
accented); 5 syllables, 5 words, 2 phrases. Missing neighbours are 0, the
syllable/word/phrase fields of a pause are x, a pause's tone is 0.
"""

import numpy as np
import pytest

from samplernn_pase.data import hts_labels
from samplernn_pase.data.features import expand_linguistic

TAKE_THE_BUS = [
    "0 2000000 x^x-pau+t=ey@x_x/A:0_0_0/B:x-x-x@x-x&x-x#x-x$x-x!x-x;x-x|x/C:1+1+3/D:0_0"
    "/E:x+x@x+x&x+x#x+x/F:content_1/G:0_0/H:x=x@1=2|0/I:3=3/J:5+5-2",
    "2000000 2650000 x^pau-t+ey=k@1_3/A:0_0_0/B:1-1-3@1-1&1-3#0-1$0-1!0-2;0-2|ey/C:0+0+2/D:0_0"
    "/E:content+1@1+3&0+1#0+2/F:det_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "2650000 4100000 pau^t-ey+k=dh@2_2/A:0_0_0/B:1-1-3@1-1&1-3#0-1$0-1!0-2;0-2|ey/C:0+0+2/D:0_0"
    "/E:content+1@1+3&0+1#0+2/F:det_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "4100000 4700000 t^ey-k+dh=ax@3_1/A:0_0_0/B:1-1-3@1-1&1-3#0-1$0-1!0-2;0-2|ey/C:0+0+2/D:0_0"
    "/E:content+1@1+3&0+1#0+2/F:det_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "4700000 5000000 ey^k-dh+ax=b@1_2/A:1_1_3/B:0-0-2@1-1&2-2#1-1$1-1!1-1;1-1|ax/C:1+1+3/D:content_1"
    "/E:det+1@2+2&1+1#1+1/F:content_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "5000000 5450000 k^dh-ax+b=ah@2_1/A:1_1_3/B:0-0-2@1-1&2-2#1-1$1-1!1-1;1-1|ax/C:1+1+3/D:content_1"
    "/E:det+1@2+2&1+1#1+1/F:content_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "5450000 6050000 dh^ax-b+ah=s@1_3/A:0_0_2/B:1-1-3@1-1&3-1#1-0$1-0!2-0;2-0|ah/C:1+0+3/D:det_1"
    "/E:content+1@3+1&1+0#2+0/F:content_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "6050000 7300000 ax^b-ah+s=pau@2_2/A:0_0_2/B:1-1-3@1-1&3-1#1-0$1-0!2-0;2-0|ah/C:1+0+3/D:det_1"
    "/E:content+1@3+1&1+0#2+0/F:content_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "7300000 8400000 b^ah-s+pau=dh@3_1/A:0_0_2/B:1-1-3@1-1&3-1#1-0$1-0!2-0;2-0|ah/C:1+0+3/D:det_1"
    "/E:content+1@3+1&1+0#2+0/F:content_1/G:0_0/H:3=3@1=2|L-H%/I:2=2/J:5+5-2",
    "8400000 10900000 ah^s-pau+dh=eh@x_x/A:1_1_3/B:x-x-x@x-x&x-x#x-x$x-x!x-x;x-x|x/C:1+0+3/D:content_1"
    "/E:x+x@x+x&x+x#x+x/F:content_1/G:3_3/H:x=x@2=1|0/I:0=0/J:5+5-2",
    "10900000 11350000 s^pau-dh+eh=n@1_3/A:1_1_3/B:1-0-3@1-1&1-2#0-1$0-1!0-1;0-1|eh/C:1+1+3/D:content_1"
    "/E:content+1@1+2&0+1#0+1/F:content_1/G:3_3/H:2=2@2=1|L-L%/I:0=0/J:5+5-2",
    "11350000 12500000 pau^dh-eh+n=w@2_2/A:1_1_3/B:1-0-3@1-1&1-2#0-1$0-1!0-1;0-1|eh/C:1+1+3/D:content_1"
    "/E:content+1@1+2&0+1#0+1/F:content_1/G:3_3/H:2=2@2=1|L-L%/I:0=0/J:5+5-2",
    "12500000 13300000 dh^eh-n+w=ao@3_1/A:1_1_3/B:1-0-3@1-1&1-2#0-1$0-1!0-1;0-1|eh/C:1+1+3/D:content_1"
    "/E:content+1@1+2&0+1#0+1/F:content_1/G:3_3/H:2=2@2=1|L-L%/I:0=0/J:5+5-2",
    "13300000 14000000 eh^n-w+ao=k@1_3/A:1_0_3/B:1-1-3@1-1&2-1#1-0$0-0!1-0;0-0|ao/C:0+0+0/D:content_1"
    "/E:content+1@2+1&1+0#1+0/F:0_0/G:3_3/H:2=2@2=1|L-L%/I:0=0/J:5+5-2",
    "14000000 16200000 n^w-ao+k=pau@2_2/A:1_0_3/B:1-1-3@1-1&2-1#1-0$0-0!1-0;0-0|ao/C:0+0+0/D:content_1"
    "/E:content+1@2+1&1+0#1+0/F:0_0/G:3_3/H:2=2@2=1|L-L%/I:0=0/J:5+5-2",
    "16200000 17000000 w^ao-k+pau=x@3_1/A:1_0_3/B:1-1-3@1-1&2-1#1-0$0-0!1-0;0-0|ao/C:0+0+0/D:content_1"
    "/E:content+1@2+1&1+0#1+0/F:0_0/G:3_3/H:2=2@2=1|L-L%/I:0=0/J:5+5-2",
    "17000000 19500000 ao^k-pau+x=x@x_x/A:1_1_3/B:x-x-x@x-x&x-x#x-x$x-x!x-x;x-x|x/C:0+0+0/D:content_1"
    "/E:x+x@x+x&x+x#x+x/F:0_0/G:3_3/H:x=x@2=1|0/I:0=0/J:5+5-2",
]

# Every field of the `t` of "take" (line 2) and of the middle pause (line 10).
T_OF_TAKE = {
    "p1": "x", "p2": "pau", "p3": "t", "p4": "ey", "p5": "k", "p6": "1", "p7": "3",
    "a1": "0", "a2": "0", "a3": "0",
    "b1": "1", "b2": "1", "b3": "3", "b4": "1", "b5": "1", "b6": "1", "b7": "3", "b8": "0", "b9": "1",
    "b10": "0", "b11": "1", "b12": "0", "b13": "2", "b14": "0", "b15": "2", "b16": "ey",
    "c1": "0", "c2": "0", "c3": "2", "d1": "0", "d2": "0",
    "e1": "content", "e2": "1", "e3": "1", "e4": "3", "e5": "0", "e6": "1", "e7": "0", "e8": "2",
    "f1": "det", "f2": "1", "g1": "0", "g2": "0",
    "h1": "3", "h2": "3", "h3": "1", "h4": "2", "h5": "L-H%", "i1": "2", "i2": "2", "j1": "5", "j2": "5", "j3": "2",
}
MIDDLE_PAUSE = {
    "p1": "ah", "p2": "s", "p3": "pau", "p4": "dh", "p5": "eh", "p6": "x", "p7": "x",
    "a1": "1", "a2": "1", "a3": "3", **{f"b{i}": "x" for i in range(1, 17)},
    "c1": "1", "c2": "0", "c3": "3", "d1": "content", "d2": "1", **{f"e{i}": "x" for i in range(1, 9)},
    "f1": "content", "f2": "1", "g1": "3", "g2": "3",
    "h1": "x", "h2": "x", "h3": "2", "h4": "1", "h5": "0", "i1": "0", "i2": "0", "j1": "5", "j2": "5", "j3": "2",
}


def context_of(line: str) -> str:
    return line.split()[2]


def test_every_field_of_a_phone_and_of_a_pause():
    fields, state = hts_labels.parse_context(context_of(TAKE_THE_BUS[1]))
    assert state is None
    assert fields == T_OF_TAKE
    fields, _ = hts_labels.parse_context(context_of(TAKE_THE_BUS[9]))
    assert fields == MIDDLE_PAUSE
    assert len(hts_labels.FIELDS) == 53 and list(fields) == hts_labels.FIELDS


def test_phone_level_file_times_symbols_and_numbers():
    """Fails on the parser of main at 732048f (it wanted `/I:i1_i2`, real files have `/I:i1=i2`)."""
    labels = hts_labels.parse_lines(TAKE_THE_BUS + [""])
    assert len(labels.starts) == 17
    assert labels.starts[:3].tolist() == [0.0, 0.2, 0.265] and labels.ends[-1] == pytest.approx(1.95)
    assert labels.phone_durations[0] == pytest.approx(0.2) and labels.phone_durations[9] == pytest.approx(0.25)
    categorical = [dict(zip(hts_labels.CATEGORICAL_FIELDS, row)) for row in labels.categorical.tolist()]
    assert categorical[0] == {"p1": "x", "p2": "x", "p3": "pau", "p4": "t", "p5": "ey", "b16": "x",
                              "d1": "0", "e1": "x", "f1": "content", "h5": "0"}
    assert categorical[4] == {"p1": "ey", "p2": "k", "p3": "dh", "p4": "ax", "p5": "b", "b16": "ax",
                              "d1": "content", "e1": "det", "f1": "content", "h5": "L-H%"}
    assert categorical[13]["h5"] == "L-L%" and categorical[13]["f1"] == "0"
    assert [c["p3"] for c in categorical] == "pau t ey k dh ax b ah s pau dh eh n w ao k pau".split()
    real = [dict(zip(hts_labels.LABEL_REAL_FIELDS, row)) for row in labels.real.tolist()]
    expected = {k: float(v) for k, v in T_OF_TAKE.items() if k not in hts_labels.CATEGORICAL_TABLES}
    assert real[1] == expected
    # x (not applicable) is 0 among the numbers
    assert real[9]["b1"] == 0.0 and real[9]["h1"] == 0.0 and real[9]["h3"] == 2.0 and real[9]["a3"] == 3.0
    assert real[16]["j1"] == 5.0 and real[16]["j3"] == 2.0 and real[13]["b7"] == 1.0


def test_state_level_file_merges_into_the_same_phones(to_state_level):
    by_hand = [  # the first pause as a Merlin state alignment writes it
        "0 50000 " + context_of(TAKE_THE_BUS[0]) + "[2]",
        "50000 100000 " + context_of(TAKE_THE_BUS[0]) + "[3]",
        "100000 150000 " + context_of(TAKE_THE_BUS[0]) + "[4]",
        "150000 1700000 " + context_of(TAKE_THE_BUS[0]) + "[5]",
        "1700000 2000000 " + context_of(TAKE_THE_BUS[0]) + "[6]",
    ]
    fields, state = hts_labels.parse_context(by_hand[3].split()[2])
    assert state == 5 and fields["j1"] == "5" and fields["i2"] == "3"
    phones = hts_labels.parse_lines(TAKE_THE_BUS)
    states = hts_labels.parse_lines(by_hand + to_state_level(TAKE_THE_BUS[1:]))
    assert len(to_state_level(TAKE_THE_BUS[1:])) == 5 * 16
    np.testing.assert_allclose(states.starts, phones.starts)
    np.testing.assert_allclose(states.ends, phones.ends)
    assert (states.categorical == phones.categorical).all() and (states.real == phones.real).all()


def test_two_identical_contexts_in_a_row_stay_two_phones(to_state_level):
    """A state index that starts again opens a new phone even when the context repeats."""
    line = TAKE_THE_BUS[0]
    repeated = to_state_level([line]) + to_state_level(["2000000 3000000 " + context_of(line)])
    labels = hts_labels.parse_lines(repeated)
    assert labels.starts.tolist() == [0.0, 0.2] and labels.ends.tolist() == [0.2, 0.3]


def test_tones_and_parts_of_speech_as_festival_writes_them():
    """ToBI tones with -, %, * and NONE; every GPOS class of the question files."""
    line = TAKE_THE_BUS[1]
    for tone in ("L-L%", "L-H%", "H-H%", "H-L%", "NONE", "H*", "L+H*", "!H*", "0"):
        fields, _ = hts_labels.parse_context(context_of(line).replace("|L-H%/I:", f"|{tone}/I:"))
        assert fields["h5"] == tone and fields["i1"] == "2"
    for pos in ("aux", "cc", "content", "det", "in", "md", "pps", "punc", "to", "wp", "0", "x"):
        fields, _ = hts_labels.parse_context(context_of(line).replace("/F:det_1", f"/F:{pos}_1")
                                             .replace("/D:0_0", f"/D:{pos}_0"))
        assert fields["f1"] == pos and fields["d1"] == pos and fields["f2"] == "1"
    fields, _ = hts_labels.parse_context(context_of(line).replace("|ey/C:", "|novowel/C:"))
    assert fields["b16"] == "novowel"


def test_bad_labels_name_the_problem():
    with pytest.raises(hts_labels.LabelError, match="not an HTS full-context"):
        hts_labels.parse_lines(["0 2000000 pau"])  # a monophone label
    with pytest.raises(hts_labels.LabelError, match=r"line 1: section /I: is '/I:3_3'.*/I:i1=i2"):
        hts_labels.parse_lines([TAKE_THE_BUS[0].replace("/I:3=3", "/I:3_3")])
    with pytest.raises(hts_labels.LabelError, match="line 2: field b4 is 'one'"):
        hts_labels.parse_lines([TAKE_THE_BUS[0], TAKE_THE_BUS[1].replace("@1-1&1-3", "@one-1&1-3")])
    with pytest.raises(hts_labels.LabelError, match="times must be integers"):
        hts_labels.parse_lines(["0.0 0.2 " + context_of(TAKE_THE_BUS[0])])
    with pytest.raises(hts_labels.LabelError, match="not increasing"):
        hts_labels.parse_lines(TAKE_THE_BUS[1:3][::-1])
    with pytest.raises(hts_labels.LabelError, match="no label lines"):
        hts_labels.parse_lines(["", "  "])


def test_festival_segment_labels_are_not_full_context(tmp_path):
    """CMU ARCTIC's own lab/ files (Festival segments) versus an HTS full-context file."""
    festival = tmp_path / "arctic_a0001.lab"
    festival.write_text("separator ;\nnfields 1\n#\n    0.20000 125 pau\n    0.26500 125 t\n")
    full = tmp_path / "full.lab"
    full.write_text("\n".join(TAKE_THE_BUS) + "\n")
    assert not hts_labels.is_full_context_file(festival)
    assert hts_labels.is_full_context_file(full)
    assert not hts_labels.is_full_context_file(tmp_path / "missing.lab")


def test_the_seed_columns_of_every_frame():
    """55 columns: duration, position in the phone, the 53 fields; 10 symbols in four tables, 45 numbers."""
    assert hts_labels.COLUMNS[:2] == ["phone_duration", "position_in_phone"] and len(hts_labels.COLUMNS) == 55
    assert hts_labels.COLUMNS[2:] == hts_labels.FIELDS
    # the seed's mixer: columns 2-6 phoneme table, 27 vowel, 31/33/41 part of speech, 49 ToBI
    seed_tables = {2: "phoneme", 3: "phoneme", 4: "phoneme", 5: "phoneme", 6: "phoneme", 27: "vowel",
                   31: "pos", 33: "pos", 41: "pos", 49: "tobi"}
    assert {hts_labels.COLUMNS.index(f): t for f, t in hts_labels.CATEGORICAL_TABLES.items()} == seed_tables
    assert len(hts_labels.FRAME_REAL_FIELDS) == 45 and set(hts_labels.TABLES) == set(seed_tables.values())

    labels = hts_labels.parse_lines(TAKE_THE_BUS)
    phone, position = hts_labels.frame_alignment(labels, num_frames=390, hop_seconds=0.005)
    real = expand_linguistic(phone, position, labels.phone_durations, labels.real)
    assert real.shape == (390, 45)
    columns = dict(zip(hts_labels.FRAME_REAL_FIELDS, real.T))
    frame = 45  # 0.2275 s: the t of "take" (0.2 .. 0.265 s)
    assert phone[frame] == 1
    assert columns["phone_duration"][frame] == pytest.approx(0.065)
    assert columns["position_in_phone"][frame] == pytest.approx((0.2275 - 0.2) / 0.065, abs=1e-6)
    assert {f: columns[f][frame] for f in hts_labels.LABEL_REAL_FIELDS} == \
        {k: float(v) for k, v in T_OF_TAKE.items() if k not in hts_labels.CATEGORICAL_TABLES}


def test_frame_alignment_and_position_in_phone():
    labels = hts_labels.parse_lines(TAKE_THE_BUS[:2])
    phone, position = hts_labels.frame_alignment(labels, num_frames=53, hop_seconds=0.005)
    assert phone[:40].tolist() == [0] * 40 and phone[40:].tolist() == [1] * 13
    assert position[0] == pytest.approx(0.0125) and position[39] == pytest.approx(0.9875)
    assert np.all((position >= 0) & (position < 1))


def test_format_context_writes_what_the_parser_reads():
    fields, _ = hts_labels.parse_context(context_of(TAKE_THE_BUS[1]))
    assert hts_labels.format_context(fields) == context_of(TAKE_THE_BUS[1])
    assert hts_labels.format_context(MIDDLE_PAUSE) == context_of(TAKE_THE_BUS[9])


def test_every_column_is_documented():
    """docs/linguistic_features.md has one row per column, in order, with its table or `real`."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "linguistic_features.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `([\w]+)` \|[^|]*\|[^|]*\| ([^|]+) \|$", text, re.M)
    assert [(int(n), c) for n, c, _ in rows] == list(enumerate(hts_labels.COLUMNS))
    kinds = {c: k.strip() for _, c, k in rows}
    tables = {"phoneme": "phoneme table", "vowel": "vowel table", "pos": "part-of-speech table", "tobi": "ToBI table"}
    for column in hts_labels.COLUMNS:
        if column in hts_labels.CATEGORICAL_TABLES:
            assert kinds[column] == tables[hts_labels.CATEGORICAL_TABLES[column]], column
        else:
            normalized = column not in hts_labels.UNNORMALIZED_FIELDS
            assert kinds[column] == ("real" if normalized else "real, not normalized"), column

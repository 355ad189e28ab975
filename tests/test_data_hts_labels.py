import numpy as np
import pytest

from samplernn_pase.data import hts_labels

PHONE = ("x^x-sil+hh=ax@x_x/A:x_x_x/B:x-x-x@x-x&x-x#x-x$x-x!x-x;x-x|x/C:1+0+2/D:x_x/E:x+x@x+x&x+x#x+x"
         "/F:content_2/G:x_x/H:x=x@x=x|x/I:4_3/J:4+3-1")
HELLO = ("x^sil-hh+ax=l@1_2/A:x_x_x/B:1-0-2@1-2&1-4#0-1$0-1!0-1;0-1|ax/C:0+0+2/D:x_x/E:content+2@1+3&0+1#0+1"
         "/F:det_1/G:x_x/H:4=3@1=1|L-L%/I:x_x/J:4+3-1")


def test_phone_level_fields_and_x():
    labels = hts_labels.parse_lines([f"0 1000000 {PHONE}", f"1000000 1500000 {HELLO}", ""])
    assert labels.starts.tolist() == [0.0, 0.1]
    assert labels.ends.tolist() == [0.1, 0.15]
    categorical = dict(zip(hts_labels.CATEGORICAL_FIELDS, labels.categorical[1]))
    assert categorical == {"p1": "x", "p2": "sil", "p3": "hh", "p4": "ax", "p5": "l", "b16": "ax",
                           "d1": "x", "e1": "content", "f1": "det", "h5": "L-L%"}
    real = dict(zip(hts_labels.REAL_FIELDS, labels.real[1]))
    assert real["p6"] == 1 and real["p7"] == 2 and real["b4"] == 1 and real["e3"] == 1 and real["j1"] == 4
    assert real["a1"] == 0.0  # x becomes 0
    assert labels.real.shape == (2, 43) and labels.categorical.shape == (2, 10)


def test_state_level_lines_merge_into_phones():
    lines = []
    for phone, (start, end) in ((PHONE, (0, 1000000)), (HELLO, (1000000, 2000000))):
        bounds = np.linspace(start, end, 6).astype(int)
        lines += [f"{a} {b} {phone}[{state}]" for state, a, b in zip(range(2, 7), bounds, bounds[1:])]
    labels = hts_labels.parse_lines(lines)
    assert labels.starts.tolist() == [0.0, 0.1]
    assert labels.ends.tolist() == [0.1, 0.2]
    assert labels.categorical[1, 2] == "hh"


def test_bad_lines_raise():
    with pytest.raises(hts_labels.LabelError):
        hts_labels.parse_lines(["0 100 pau"])  # a monophone label, not full context
    with pytest.raises(hts_labels.LabelError):
        hts_labels.parse_lines([f"0 abc {PHONE}"])
    with pytest.raises(hts_labels.LabelError):
        hts_labels.parse_lines([])


def test_frame_alignment_and_position_in_phone():
    labels = hts_labels.parse_lines([f"0 1000000 {PHONE}", f"1000000 1500000 {HELLO}"])
    phone, position = hts_labels.frame_alignment(labels, num_frames=30, hop_seconds=0.005)
    assert phone[:20].tolist() == [0] * 20 and phone[20:].tolist() == [1] * 10
    assert position[0] == pytest.approx(0.025) and position[19] == pytest.approx(0.975)
    assert position[20] == pytest.approx(0.05)
    assert np.all((position >= 0) & (position < 1))


def test_format_and_parse_round_trip():
    fields = {"p1": "a", "p2": "b", "p3": "c", "p4": "d", "p5": "e", "b16": "c", "h5": "H-H%", "j3": 2}
    parsed, state = hts_labels.parse_context(hts_labels.format_context(fields))
    assert state is None
    assert {k: parsed[k] for k in fields} == {k: str(v) for k, v in fields.items()}
    assert parsed["a1"] == "x"

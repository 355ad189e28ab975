"""The speaker's echo (audio/echo.py), against what eSpeak NG's voice files declare and against echoes
put on a natural recording by scipy's own filter."""

import re
from pathlib import Path

import numpy as np
import pysptk
import pytest
import soundfile
from scipy.signal import lfilter

from samplernn_pase.audio.echo import add_echo, estimate_echo
from samplernn_pase.data.demo_corpus import SPEAKERS

RATE = 16000


def arctic() -> np.ndarray:
    """CMU ARCTIC's arctic_a0007 (a natural voice, 16 kHz), as pysptk ships it."""
    audio, rate = soundfile.read(Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav")
    assert rate == RATE
    return audio


def comb(audio, delay, gain):
    """y[n] = x[n] + gain y[n - delay], written with scipy's lfilter, not the module's."""
    return lfilter([1.0], np.r_[1.0, np.zeros(delay - 1), -gain], audio)


def test_add_echo_is_the_feedback_comb():
    impulse = np.zeros(1000)
    impulse[10] = 1.0
    echoed = add_echo(impulse, 300, 0.2)
    expected = np.zeros(1000)
    expected[[10, 310, 610, 910]] = [1.0, 0.2, 0.04, 0.008]
    np.testing.assert_allclose(echoed, expected, atol=1e-12)
    assert add_echo(impulse, 0, 0.0) is impulse


def test_a_dry_natural_voice_has_no_echo_and_one_put_on_it_is_found():
    audio = arctic()
    assert estimate_echo([audio], RATE) == (0, 0.0)
    for delay_ms, gain in ((140, 0.1), (90, 0.2)):
        delay, found = estimate_echo([comb(audio, delay_ms * 16, gain)], RATE)
        assert delay == delay_ms * 16
        assert found == pytest.approx(gain, abs=0.03)     # one 4 s recording's own correlation at that lag


def test_the_demo_voices_echoes_are_those_espeak_declares(demo_corpus_path):
    """eSpeak NG's variant files say `echo <delay ms> <amplitude>`, the amplitude in 1/256ths of the
    sound (wavegen.c); variants without the line have none."""
    import espeakng_loader

    variants = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    variant_of = {speaker: variant for speaker, _, variant, *_ in SPEAKERS}
    folders = sorted(p for p in demo_corpus_path.iterdir() if p.is_dir())
    assert len(folders) == 8
    for folder in folders:
        declared = re.search(r"^echo\s+(\d+)\s+(\d+)", (variants / variant_of[folder.name]).read_text(), re.M)
        recordings = [soundfile.read(wav)[0] for wav in sorted(folder.glob("*.wav"))]
        delay, gain = estimate_echo(recordings, RATE)
        if declared is None:
            assert (delay, gain) == (0, 0.0), folder.name
        else:
            assert delay / 16 == pytest.approx(int(declared[1]), abs=1), folder.name
            assert gain == pytest.approx(int(declared[2]) / 256, abs=0.012), folder.name

"""bench/acoustic_new_text.py's --ablations renders, against loops and np.interp written here."""

import importlib.util
from pathlib import Path

import numpy as np

SPEC = importlib.util.spec_from_file_location(
    "acoustic_new_text", Path(__file__).resolve().parents[1] / "bench" / "acoustic_new_text.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_phone_flat_and_phone_interp_are_the_phone_means_held_and_joined():
    rng = np.random.default_rng(0)
    real, predicted = rng.standard_normal((30, 43)), rng.standard_normal((30, 43))
    phone_index = np.repeat([0, 1, 3, 4], [5, 10, 8, 7])      # phone 2 lasts no frame
    out = bench.ablations({"real": real, "oracle": predicted, "phone_index": phone_index})
    flat, joined = real.copy(), real.copy()
    centres = {0: 2.0, 1: 9.5, 3: 18.5, 4: 26.0}             # the middle frame of each phone, by hand
    for phone in centres:
        flat[phone_index == phone, 2:42] = real[phone_index == phone, 2:42].mean(axis=0)
    for d in range(2, 42):
        joined[:, d] = np.interp(np.arange(30), list(centres.values()),
                                 [real[phone_index == p, d].mean() for p in centres])
    np.testing.assert_allclose(out["phone_flat"], flat)
    np.testing.assert_allclose(out["phone_interp"], joined)
    np.testing.assert_array_equal(out["swap_c5_39"][:, 7:42], predicted[:, 7:42])
    np.testing.assert_array_equal(out["swap_c5_39"][:, :7], real[:, :7])

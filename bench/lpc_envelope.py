"""How much of the spectral envelope a linear predictor of each order keeps: the vocoder's floor.

    python bench/lpc_envelope.py [--experiment demo] [--orders 16 24 32 48] [--split test]

SampleRNN as a source-filter vocoder (`model.lpc_order`) shapes its excitation with the
all-pole filter 1 / A(z) that audio/excitation.py `predictor_from_mel_cepstrum` fits to each
frame's mel-cepstrum (WORLD's envelope, order 39, warped by alpha). The network could correct
what that filter misses, but it is only trained to predict the residual, so what the filter
misses is where the rendered audio's envelope starts from. For every frame of the split's
utterances this takes the predictor of each order, turns its power spectrum (the prediction
error power over |A|^2) back into a mel-cepstrum of the features' order and warping
(pysptk.sp2mc) and measures the mel-cepstral distortion against the features' own, as
`test` measures the rendered audio's (metrics/speech.py: c1 and up, 10 / ln 10 sqrt(2 sum)).
Prints one JSON line: per order, the mean MCD over voiced and over unvoiced frames.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samplernn_pase.audio.excitation import ENVELOPE_FFT, predictor_from_mel_cepstrum  # noqa: E402
from samplernn_pase.data.store import UtteranceStore  # noqa: E402
from samplernn_pase.metrics.speech import frame_distortions  # noqa: E402


def envelope_distortion(mcep: np.ndarray, alpha: float, order: int) -> np.ndarray:
    """(frames,) MCD in dB between each frame's mel-cepstrum and that of its order-`order`
    all-pole fit."""
    import pysptk
    coefficients, error = predictor_from_mel_cepstrum(mcep, alpha, order)
    inverse = np.concatenate([np.ones((len(coefficients), 1)), -coefficients.astype(np.float64)], axis=1)
    power = np.maximum(error, 1e-20)[:, None] / np.abs(np.fft.rfft(inverse, ENVELOPE_FFT, axis=1)) ** 2
    fitted = pysptk.sp2mc(np.maximum(power, 1e-20), mcep.shape[1] - 1, alpha)
    return frame_distortions(fitted, mcep)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="demo", help="an experiment whose data.json indexes the corpus")
    parser.add_argument("--experiments-path", type=Path, default=Path("experiments"))
    parser.add_argument("--data-path", type=Path, default=Path("data"))
    parser.add_argument("--orders", type=int, nargs="+", default=[16, 24, 32, 48])
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    root = args.experiments_path / args.experiment
    index = json.loads((root / "data.json").read_text())
    store = UtteranceStore(index, dict(np.load(root / "normalization.npz")), args.data_path)
    fields, alpha = index["acoustic_fields"], index["feature_params"]["mcep_alpha"]
    ids = [u["id"] for u in index["utterances"] if u["split"] == args.split]
    if not ids:
        raise SystemExit(f"{root}/data.json: no utterance in split {args.split!r}")
    frames = []
    for utterance_id in ids:
        raw = store.raw_acoustic(store.load(utterance_id)).astype(np.float64)
        frames.append((raw[:, fields.index("mcep0"):fields.index("bap")], raw[:, fields.index("vuv")] > 0.5))
    voiced = np.concatenate([v for _, v in frames])
    result = {"experiment": args.experiment, "split": args.split, "utterances": len(ids),
              "frames": len(voiced), "mcd_db": {}}
    for order in args.orders:
        distortion = np.concatenate([envelope_distortion(mcep, alpha, order) for mcep, _ in frames])
        result["mcd_db"][str(order)] = {"voiced": round(float(distortion[voiced].mean()), 3),
                                        "unvoiced": round(float(distortion[~voiced].mean()), 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

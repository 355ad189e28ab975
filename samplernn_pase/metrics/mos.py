"""DNSMOS (Microsoft's non-intrusive MOS predictor) through `speechmos`.

The ONNX models ship in the speechmos wheel and run with onnxruntime: P.808
overall MOS, and the P.835 signal (SIG), background (BAK) and overall (OVRL)
scores, each on a 1-5 scale. DNSMOS reads 16 kHz audio in [-1, 1] in windows
of 9.01 s. A shorter clip is repeated up to exactly 9.01 s here, which is one
window: speechmos would double it until it is longer and average shifted
windows of that periodic signal, which costs several model runs for the same
content.
"""

import warnings

import numpy as np

DNSMOS_RATE = 16000
WINDOW_SECONDS = 9.01


def dnsmos(audio: np.ndarray, sample_rate: int) -> dict:
    """{"dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}; None values for silence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from speechmos import dnsmos as speechmos_dnsmos
    wave = np.asarray(audio, dtype=np.float32)
    if sample_rate != DNSMOS_RATE:
        import librosa
        wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=DNSMOS_RATE)
    if not np.any(np.abs(wave) > 1e-6):
        return {key: None for key in ("dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")}
    window = int(WINDOW_SECONDS * DNSMOS_RATE)
    if len(wave) < window:
        wave = np.resize(wave, window)          # repeats the clip
    scores = speechmos_dnsmos.run(np.clip(wave, -1.0, 1.0), sr=DNSMOS_RATE)
    return {"dnsmos_p808": float(scores["p808_mos"]), "dnsmos_sig": float(scores["sig_mos"]),
            "dnsmos_bak": float(scores["bak_mos"]), "dnsmos_ovrl": float(scores["ovrl_mos"])}

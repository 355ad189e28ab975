"""Fréchet distances between generated and real sets, on embeddings that work offline.

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

between Gaussians fitted to two sets of embeddings (the FID / FAD formula).
FID and FAD proper use Inception and VGGish, whose weights this project
cannot ship; the embedders here are:

- `resemblyzer`: the pretrained speaker encoder of the evaluation (one 256-d
  vector per utterance, metrics/speaker.py);
- `pase`: the project's PASE encoder, when the experiment names one
  (`model.pase_experiment`): the mean PASE frame of each utterance;
- `log_mel`: log-mel frames (audio/mel.py, 40 mels, 64 ms windows, 10 ms hop),
  each frame a sample: a model-free baseline.

A distance alone has no scale, so every report carries the floor: the
distance between two halves of the real set (alternate items), and the
number of samples on each side. With few samples in many dimensions the
covariances are singular and every distance is biased upwards: compare a
distance with its floor, and runs only at equal sample counts.
"""

import warnings

import numpy as np
import scipy.linalg
import torch

LOG_MEL = {"n_fft": 1024, "hop_seconds": 0.010, "n_mels": 40}


def gaussian(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, for n > 1) covariance of (n, d) embeddings."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    sigma = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    return x.mean(0), np.atleast_2d(sigma)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    sqrtm(S1 S2) is computed by scipy. When the product is singular (fewer
    samples than dimensions), its square root can come out non-finite or with
    a sizeable imaginary part; then eps * I, scaled to the covariances' mean
    variance, is added to both (the usual FID code's remedy). The imaginary part
    that remains, rounding noise for positive semi-definite inputs, is dropped
    once checked to be small on the diagonal.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians have different dimensions")

    def square_root(a, b):
        with warnings.catch_warnings():          # "matrix is singular": handled below
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            root = scipy.linalg.sqrtm(a @ b)
        return root, bool(np.all(np.isfinite(root)))

    def imaginary(root):
        return float(np.max(np.abs(np.diagonal(root).imag))) if np.iscomplexobj(root) else 0.0

    covmean, finite = square_root(sigma1, sigma2)
    scale = max(float(np.trace(sigma1) + np.trace(sigma2)) / (2 * len(sigma1)), 1e-12)
    if not finite or imaginary(covmean) > 1e-3 * scale:
        offset = np.eye(len(sigma1)) * eps * scale
        covmean, finite = square_root(sigma1 + offset, sigma2 + offset)
    if not finite or imaginary(covmean) > 1e-3 * scale:
        raise ValueError(f"no stable square root of the covariance product "
                         f"(imaginary part {imaginary(covmean):.3g})")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean.real)
    return float(max(value, 0.0))


def set_distance(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian(a), *gaussian(b))


def report(generated: list[np.ndarray], real: list[np.ndarray]) -> dict:
    """Distance generated vs. real and its floor, from per-item embedding arrays ((k, d) each;
    an utterance may give several rows, e.g. log-mel frames). Halves split items, not rows."""
    def rows(items):
        return np.concatenate([np.atleast_2d(i) for i in items]) if items else np.zeros((0, 0))

    generated, real = [g for g in generated if g is not None], [r for r in real if r is not None]
    result = {"distance": None, "floor": None, "generated": len(generated), "real": len(real),
              "generated_rows": int(len(rows(generated))), "real_rows": int(len(rows(real)))}
    if len(rows(generated)) > 1 and len(rows(real)) > 1:
        result["distance"] = set_distance(rows(generated), rows(real))
    if len(real) >= 2 and min(len(rows(real[0::2])), len(rows(real[1::2]))) > 1:
        result["floor"] = set_distance(rows(real[0::2]), rows(real[1::2]))
    return result


# --- embedders: a list of waves -> one (k, d) array per wave -------------------------


def log_mel_frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 40) log-mel frames of one wave (the project's mel function)."""
    from ..audio.mel import mel_spectrogram
    hop = int(round(LOG_MEL["hop_seconds"] * sample_rate))
    n_fft = LOG_MEL["n_fft"] * sample_rate // 16000
    wave = torch.tensor(np.asarray(audio, np.float32))
    if len(wave) <= n_fft:
        return None
    return mel_spectrogram(wave, sample_rate, n_fft, hop, n_fft, LOG_MEL["n_mels"]).T.numpy()


def resemblyzer_rows(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    from .speaker import resemblyzer_embedding
    embedding = resemblyzer_embedding(audio, sample_rate)
    return None if embedding is None else embedding[None]


def pase_rows(pase):
    def embed_one(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
        from ..models.pase import embed
        try:
            return embed(pase, [audio], sample_rate)[None]
        except ValueError:          # too short to give one frame
            return None
    return embed_one


def audio_embedders(pase=None) -> dict:
    """name -> function(wave, sample_rate) -> (k, d) array or None."""
    embedders = {"resemblyzer": resemblyzer_rows, "log_mel": log_mel_frames}
    if pase is not None:
        embedders["pase"] = pase_rows(pase)
    return embedders


def audio_frechet(generated: list[np.ndarray], real: list[np.ndarray], sample_rate: int,
                  pase=None, embed_cache: dict | None = None, real_keys: list | None = None) -> dict:
    """Fréchet reports of generated vs. real waveforms for every embedder (any model family).

    `embed_cache` with `real_keys` (one hashable per real wave) keeps the real
    set's embeddings between calls, e.g. between the epochs of one training run.
    """
    results = {}
    for name, embed in audio_embedders(pase).items():
        real_rows = []
        for position, wave in enumerate(real):
            key = None if embed_cache is None or real_keys is None else (name, real_keys[position])
            if key is not None and key in embed_cache:
                real_rows.append(embed_cache[key])
                continue
            rows = embed(wave, sample_rate)
            if key is not None:
                embed_cache[key] = rows
            real_rows.append(rows)
        results[name] = report([embed(wave, sample_rate) for wave in generated], real_rows)
    return results


def mel_frechet(generated_mels: list[np.ndarray], real_mels: list[np.ndarray]) -> dict:
    """Fréchet report on log-mel frames given directly ((frames, n_mels) each, same scale on
    both sides), for families that produce mels."""
    return report([np.asarray(m, np.float64) for m in generated_mels],
                  [np.asarray(m, np.float64) for m in real_mels])

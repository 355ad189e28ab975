"""Mu-law companding and quantization of waveforms in [-1, 1].

Works on numpy arrays (the data sources) and torch tensors (the models).
Codes are ``int64`` in ``[0, q_levels)``; ``q_levels // 2`` is (about) silence.
Quantization bins are uniform in the companded domain and decoding returns the
bin centre, so ``mulaw_decode(mulaw_encode(x))`` is the nearest representable
value.
"""
import math

import numpy as np
import torch


def mulaw_encode(x, q_levels=256):
    """Waveform in [-1, 1] -> integer codes in [0, q_levels)."""
    mu = q_levels - 1
    if isinstance(x, torch.Tensor):
        x = x.clamp(-1.0, 1.0)
        y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
        return torch.floor((y + 1) * 0.5 * q_levels).clamp_(0, q_levels - 1).long()
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    return np.clip(np.floor((y + 1) * 0.5 * q_levels), 0, q_levels - 1).astype(np.int64)


def mulaw_decode(q, q_levels=256):
    """Integer codes in [0, q_levels) -> waveform in [-1, 1] (float32)."""
    mu = q_levels - 1
    if isinstance(q, torch.Tensor):
        y = (2 * q.double() + 1) / q_levels - 1
        x = torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu
        return x.float()
    y = (2 * np.asarray(q, dtype=np.float64) + 1) / q_levels - 1
    x = np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu
    return x.astype(np.float32)


def mulaw_zero(q_levels=256):
    """The code of silence (0.0), used as the look-back before an utterance."""
    return q_levels // 2

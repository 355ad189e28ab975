"""The frozen VQ-VAE a gpt_prior experiment is built on: mel <-> codes, and the corpus's codes.

`init` of a gpt_prior experiment encodes every utterance with the VQ-VAE named
by `model.vqvae_experiment` (its log-mel analysis and [-1, 1] scaling, its
encoder, in chunks of its training crop length) into codes.npz
(data/code_windows.py `CodeGrids`); test decodes sampled codes with the same
checkpoint and renders them to audio.
"""

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..models.vqvae import MelVQVAE
from .code_windows import CodeGrids
from .mel_crops import MelCrops
from .store import UtteranceStore


class VQVAECodec:
    """The frozen VQ-VAE of a gpt_prior experiment: scaled log-mel <-> code grids, mel -> audio.

    `epoch` is resolved once (by `init`) and stored in codes.npz, so that test
    decodes with the checkpoint that made the codes. The trained model comes from
    experiment/weights.py `load_vqvae_codec` (the experiment floor reads checkpoints).
    """

    def __init__(self, model: MelVQVAE, mels: MelCrops, name: str, epoch: int, device="cpu"):
        self.name = name
        self.model, self.mels, self.epoch = model, mels, epoch
        self.config = self.model.config
        self.settings = self.mels.settings
        self.device = device

    def scaled_mel(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel of a waveform with the VQ-VAE's analysis, in its [-1, 1] scaling."""
        return self.mels.scale(self.settings.log_mel(audio))

    @torch.no_grad()
    def encode(self, scaled_mel: np.ndarray) -> np.ndarray:
        """Code grid (H, W) of a scaled mel (n_mels, frames); frames past the last whole column
        are dropped. Encoded in chunks of the VQ-VAE's training crop length."""
        step, crop = self.config.downsample_time, self.config.crop_frames
        frames = scaled_mel.shape[1] - scaled_mel.shape[1] % step
        if frames == 0:
            return np.zeros((self.config.n_mels // self.config.downsample_freq, 0), dtype=np.int64)
        mel = torch.from_numpy(np.ascontiguousarray(scaled_mel[:, :frames])).float().to(self.device)
        pieces = [self.model.encode_codes(mel[None, :, start:start + crop])[0]
                  for start in range(0, frames, crop)]
        return torch.cat(pieces, dim=1).cpu().numpy()

    @torch.no_grad()
    def decode(self, grid: torch.Tensor) -> torch.Tensor:
        """Scaled mel (n_mels, W * downsample_time) of a code grid (H, W), in crop-size chunks."""
        columns = self.config.crop_frames // self.config.downsample_time
        grid = grid.to(self.device).long()
        pieces = [self.model.decode_codes(grid[None, :, start:start + columns])[0]
                  for start in range(0, grid.shape[1], columns)]
        return torch.cat(pieces, dim=1).clamp(-1.0, 1.0).cpu()

    def to_audio(self, scaled_mel: torch.Tensor) -> np.ndarray:
        return self.mels.to_audio(scaled_mel)


def encode_corpus(codec: VQVAECodec, data_index: dict, normalization: dict, data_path: Path,
                  log) -> dict:
    """The arrays of codes.npz: the code grid of every utterance long enough for one column."""
    store = UtteranceStore(data_index, normalization, data_path, cache_size=1)
    grids, too_short = {}, 0
    for utterance in data_index["utterances"]:
        grid = codec.encode(codec.scaled_mel(store.load(utterance["id"]).audio))
        if grid.shape[1] == 0:
            too_short += 1
            continue
        grids[utterance["id"]] = grid
    log.info("code grids of %d utterances (%d columns of %d codes) from %s epoch %d%s",
             len(grids), sum(g.shape[1] for g in grids.values()),
             codec.config.n_mels // codec.config.downsample_freq, codec.name, codec.epoch,
             f"; {too_short} shorter than one column left out" if too_short else "")
    return CodeGrids.arrays(grids, codec.config.codebook_size, codec.name, codec.epoch)

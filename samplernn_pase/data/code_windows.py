"""Windows of VQ-VAE code sequences for the GPT prior, and the code grids they come from.

`init` of a gpt_prior experiment encodes every utterance into a grid of codes
(H frequency rows x W time columns) with its VQ-VAE and stores them in
`codes.npz` (`CodeGrids`). Training reads windows of the time-major sequence
(models/gpt.py `grid_to_sequence`) of at most `window_columns` columns, each
starting on a column boundary so that a code's position in a window always
tells its frequency row. A sequence shorter than a window is one window,
padded and masked; a longer one gives ceil(W / window_columns) windows, at
random column offsets drawn from (seed, epoch) when shuffling, or tiling it
from the start (the last one partial) for validation and test, so that every
code is scored once. Like every loader of the project, the position is a plain
dict, so a mid-epoch checkpoint resumes at the next batch.
"""

from pathlib import Path

import numpy as np
import torch

from ..files import read_arrays
from .planned_batches import PlannedBatches

CODES_FILE = "codes.npz"


class CodeGrids:
    """The `codes.npz` of a gpt_prior experiment: code grids by utterance id.

    Arrays: `ids` (N,), `codes` (H, total columns) int32 (the grids side by
    side along time), `offsets` (N + 1,) where each grid starts, `grid_shapes`
    (N, 2) = (H, W) per utterance, `codebook_size`, and the VQ-VAE they came
    from (`vqvae_experiment`, `vqvae_epoch`: the epoch `init` resolved, so that
    decoding later uses the same checkpoint even if the VQ-VAE trains on).
    """

    def __init__(self, path: Path):
        arrays = read_arrays(path, "code grids not found (written by `init` of a gpt_prior "
                                   "experiment; run `init` again)")
        self.codes = arrays["codes"]
        offsets = arrays["offsets"]
        self.ids = [str(i) for i in arrays["ids"]]
        self.codebook_size = int(arrays["codebook_size"])
        self.vqvae_experiment = str(arrays["vqvae_experiment"])
        self.vqvae_epoch = int(arrays["vqvae_epoch"])
        self.column_height = self.codes.shape[0]
        self._spans = {i: (int(offsets[k]), int(offsets[k + 1])) for k, i in enumerate(self.ids)}
        self.position_of = {i: k for k, i in enumerate(self.ids)}

    @staticmethod
    def arrays(grids: dict[str, np.ndarray], codebook_size: int, vqvae_experiment: str,
               vqvae_epoch: int) -> dict[str, np.ndarray]:
        """What `init` stores: the arrays of codes.npz from {utterance id: (H, W) grid}."""
        ids = list(grids)
        heights = {g.shape[0] for g in grids.values()}
        if len(heights) > 1:
            raise ValueError(f"code grids of different heights {sorted(heights)}")
        widths = np.array([grids[i].shape[1] for i in ids], dtype=np.int64)
        height = heights.pop() if heights else 0
        joined = np.concatenate([grids[i] for i in ids], axis=1) if ids else np.zeros((height, 0))
        return {"ids": np.array(ids), "codes": joined.astype(np.int32),
                "offsets": np.concatenate([[0], np.cumsum(widths)]).astype(np.int64),
                "grid_shapes": np.stack([np.full_like(widths, height), widths], axis=1),
                "codebook_size": np.array(codebook_size), "vqvae_experiment": np.array(vqvae_experiment),
                "vqvae_epoch": np.array(vqvae_epoch)}

    @classmethod
    def of_experiment(cls, root: Path) -> "CodeGrids":
        return cls(Path(root) / CODES_FILE)

    def __contains__(self, utterance_id: str) -> bool:
        return utterance_id in self._spans

    def num_columns(self, utterance_id: str) -> int:
        start, end = self._spans[utterance_id]
        return end - start

    def grid(self, utterance_id: str) -> np.ndarray:
        """(H, W) codes of one utterance, rows from low to high frequency."""
        start, end = self._spans[utterance_id]
        return self.codes[:, start:end]

    def sequence(self, utterance_id: str) -> np.ndarray:
        """The time-major code sequence (W * H,) of one utterance (models/gpt.py order)."""
        return np.ascontiguousarray(self.grid(utterance_id).T).reshape(-1)


class CodeWindowLoader(PlannedBatches):
    """Batches {"codes": (B, L) int64, "mask": (B, L) bool, "utterances": (B,) position of each
    window's utterance in `grids.ids`}."""

    def __init__(self, grids: CodeGrids, items: list[str], window_columns: int, batch_size: int,
                 seed: int, epoch: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.grids, self.items = grids, list(items)
        self.window_columns, self.batch_size = window_columns, batch_size
        self.position = 0
        rng = np.random.default_rng([seed, epoch if shuffle else 0])
        windows = []
        for row, item in enumerate(self.items):
            columns = grids.num_columns(item)
            count = -(-columns // window_columns)
            if shuffle and columns > window_columns:
                offsets = rng.integers(0, columns - window_columns + 1, size=count)
            else:
                offsets = np.arange(count) * window_columns
            windows += [(row, int(o)) for o in offsets]
        if shuffle:
            windows = [windows[i] for i in rng.permutation(len(windows))]
        # Equal batch counts on every rank keep DDP's collectives in step.
        per_rank = len(windows) // world_size
        windows = windows[rank::world_size][:per_rank]
        self.batches = [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]

    def window(self, row: int, offset: int) -> np.ndarray:
        height = self.grids.column_height
        sequence = self.grids.sequence(self.items[row])
        return sequence[offset * height:(offset + self.window_columns) * height]

    def build(self, batch: list) -> dict:
        pieces = [self.window(row, offset) for row, offset in batch]
        length = max(len(p) for p in pieces)
        codes = np.zeros((len(pieces), length), dtype=np.int64)
        mask = np.zeros((len(pieces), length), dtype=bool)
        for i, piece in enumerate(pieces):
            codes[i, :len(piece)] = piece
            mask[i, :len(piece)] = True
        return {"codes": torch.from_numpy(codes), "mask": torch.from_numpy(mask),
                "utterances": torch.tensor([self.grids.position_of[self.items[row]] for row, _ in batch])}

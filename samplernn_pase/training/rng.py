"""Random number generator states: saved in checkpoints, and side streams.

Training draws from the global generators (Python, NumPy, torch, CUDA); their
states are part of every rank's checkpoint, so that a resumed run draws the
numbers the interrupted one would have drawn. Validation and test rendering
run on their own seeded streams (`side_stream`) and hand the training stream
back untouched: the training stream is then the same whether or not a run
was stopped and resumed around them.
"""

import contextlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy(), *rest))
    torch.set_rng_state(state["torch"].cpu())     # a checkpoint may have been loaded onto a GPU
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def stream_seed(*keys: int) -> int:
    """A seed derived from integers (experiment seed, epoch, rank, purpose)."""
    return int(np.random.SeedSequence([abs(int(k)) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def side_stream(*keys: int):
    """Run a block on its own stream seeded by `keys`; the global states are restored after."""
    saved = rng_state()
    seed_everything(stream_seed(*keys))
    try:
        yield
    finally:
        set_rng_state(saved)

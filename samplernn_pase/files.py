"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A crash or Ctrl-C at any moment leaves either the old file or the new one,
never a truncated one. Used for everything the package writes: experiment
files, checkpoints, the feature cache, rendered audio. And `read_arrays`,
reading back the .npz files that `init` writes into an experiment.
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import UserError


@contextmanager
def atomic_open(path: Path):
    """A binary file to write; it replaces `path` only if the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path) as file:
        file.write(data)


def read_arrays(path: Path, missing: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickles), read at once; a UserError "path: `missing`"
    when the file is not there (`missing` says what it is and which command writes it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}

"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A crash or Ctrl-C at any moment leaves either the old file or the new one,
never a truncated one. Used for everything the package writes: experiment
files, checkpoints, the feature cache, rendered audio.
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


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

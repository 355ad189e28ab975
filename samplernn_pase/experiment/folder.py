"""The experiment folder: everything about one experiment, safe to zip and share.

Files are written atomically (temporary file in the same folder, fsync, then
rename), so a crash never leaves a truncated file. Nothing is pickled: JSON,
NPZ (`allow_pickle=False`) and `torch.save` files loaded with
`weights_only=True`, so opening a shared experiment cannot run code.
"""

import errno
import fcntl
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..files import atomic_write_bytes  # noqa: F401  (re-exported: the folder's writer)
from .config import upgrade_snapshot

CHECKPOINT_RE = re.compile(r"^(\d+)\.checkpoint\.pt$")
PARTIAL_CHECKPOINT = "partial.checkpoint.pt"
# flock(2) on a filesystem without it (some NFS, SMB and FUSE mounts).
NO_FLOCK_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise ValueError(f"{name}: object arrays would need pickle")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_torch_save(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def torch_load(path: Path, map_location="cpu", mmap: bool = False):
    """`mmap=True` maps tensors from the file instead of reading them (for reading metadata)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # a corrupt or foreign file
        raise UserError(f"{path}: cannot be loaded as a checkpoint ({type(error).__name__})") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Experiment:
    """Paths and files of `experiments/<name>/`."""

    def __init__(self, experiments_path: Path, name: str, root: Path | None = None):
        """`root`: the folder, when it is not yet `experiments_path / name` (`init`'s staging)."""
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"--experiment-name: invalid name {name!r}")
        self.name = name
        self.root = Path(root) if root is not None else Path(experiments_path) / name
        self.config_path = self.root / "config.json"
        self.data_index_path = self.root / "data.json"
        self.normalization_path = self.root / "normalization.npz"
        self.checkpoints_dir = self.root / "checkpoints"
        self.checkpoint_index_path = self.checkpoints_dir / "index.json"
        self.results_dir = self.root / "results"
        self.tensorboard_dir = self.root / "tensorboard"
        self.log_path = self.root / "verbose.log"
        self.lock_path = self.root / "train.lock"
        self.initial_weights_path = self.root / "initial_weights.pt"   # `init --init-from`

    # --- creation and loading -------------------------------------------------

    def exists(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> "Experiment":
        if not self.exists():
            raise UserError(f"{self.root}: no such experiment (run `init` first)")
        return self

    @contextmanager
    def creating(self):
        """Yield a temporary folder to fill; it becomes the experiment on success.

        A failure (or Ctrl-C) removes the temporary folder, so `init` never
        leaves a half-made experiment behind.
        """
        if self.root.exists():
            raise UserError(f"{self.root}: experiment already exists")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.name}.init-", dir=self.root.parent))
        try:
            yield staging
            if self.root.exists():
                raise UserError(f"{self.root}: experiment already exists")
            os.rename(staging, self.root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def config(self) -> dict:
        """The snapshot `init` wrote (one of an earlier version read as this version writes it)."""
        return upgrade_snapshot(json.loads(self.config_path.read_text()))

    def data_index(self) -> dict:
        return json.loads(self.data_index_path.read_text())

    def normalization(self) -> dict[str, np.ndarray]:
        with np.load(self.normalization_path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    # --- the training lock ----------------------------------------------------

    @contextmanager
    def lock(self):
        """One trainer per experiment: an exclusive `flock` on train.lock, held for the whole
        training. The kernel releases it the instant the holder dies (SIGKILL included), so a
        requeued job resumes at once. The pid and host in the file only name the holder in the
        message of a refused second trainer. Where the filesystem has no flock (ENOLCK,
        EOPNOTSUPP: some network filesystems), a warning, then the pid in the file decides."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = self._take_lock()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        # A trainer killed while writing leaves its temporary file (files.py); with the lock
        # held nobody else is writing, so these are leftovers, never a checkpoint.
        for leftover in self.checkpoints_dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        try:
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)   # while still held: see _take_lock
            os.close(fd)

    def _take_lock(self) -> int:
        """The open, locked train.lock. A holder unlinks the file before it lets go, so a file
        locked after it was unlinked is not the lock any more: then try again on the new one."""
        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refusal() from None
            except OSError as error:
                os.close(fd)
                if error.errno not in NO_FLOCK_ERRNOS:
                    raise
                return self._take_pid_lock(error)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _lock_owner(self) -> dict:
        try:
            owner = json.loads(self.lock_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _refusal(self) -> UserError:
        owner = self._lock_owner()
        who = (f"pid {owner['pid']} on {owner.get('host')}" if "pid" in owner
               else "another process")
        return UserError(f"{self.lock_path}: experiment is being trained by {who}")

    def _take_pid_lock(self, error: OSError) -> int:
        """The fallback without flock: the pid in the file decides, as a lock file without kernel
        help can: a trainer on another host, or one just killed on this one, still counts."""
        logging.getLogger("samplernn_pase").warning(
            "%s: the filesystem does not support flock (%s); falling back to the pid in the file, "
            "which cannot tell a trainer killed a moment ago (or one on another host) from a live "
            "one", self.lock_path, os.strerror(error.errno))
        owner = self._lock_owner()
        pid = owner.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and (
                owner.get("host") != socket.gethostname() or _pid_alive(pid)):
            raise UserError(f"{self._refusal()} (remove the file if that process is gone)")
        return os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)

    # --- checkpoints ----------------------------------------------------------

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"{epoch}.checkpoint.pt"

    def release_path(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"{epoch}.checkpoint.release.pt"

    @property
    def partial_checkpoint_path(self) -> Path:
        return self.checkpoints_dir / PARTIAL_CHECKPOINT

    def checkpoint_epochs(self) -> list[int]:
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoints_dir.iterdir()
                      if (m := CHECKPOINT_RE.match(p.name)))

    def checkpoint_index(self) -> dict:
        """Validation loss and iteration of each epoch checkpoint, and the best epoch."""
        if self.checkpoint_index_path.is_file():
            return json.loads(self.checkpoint_index_path.read_text())
        return {"epochs": {}, "best_epoch": None}

    def latest_checkpoint(self, map_location="cpu") -> tuple[Path, dict] | None:
        """(path, loaded state) of the checkpoint with the most training in it
        (epoch end or mid-epoch), or None before the first checkpoint."""
        candidates = []
        epochs = self.checkpoint_epochs()
        if epochs:
            candidates.append(self.checkpoint_path(epochs[-1]))
        if self.partial_checkpoint_path.is_file():
            candidates.append(self.partial_checkpoint_path)
        latest = None
        for path in candidates:
            state = torch_load(path, map_location=map_location)
            if latest is None or state["loop"]["iteration"] > latest[1]["loop"]["iteration"]:
                latest = (path, state)
        return latest

    def resolve_epoch(self, epoch: int | None) -> int:
        """`--epoch N`, or the last epoch checkpoint when omitted."""
        epochs = self.checkpoint_epochs()
        if epoch is None:
            if not epochs:
                raise UserError(f"{self.checkpoints_dir}: no checkpoint yet (run `train` first)")
            return epochs[-1]
        if epoch not in epochs:
            available = ", ".join(map(str, epochs)) or "none"
            raise UserError(f"--epoch {epoch}: no such checkpoint (available: {available})")
        return epoch

    def epoch_results_dir(self, epoch: int) -> Path:
        return self.results_dir / f"epoch-{epoch}"

"""Checkpoint files written atomically, and read back safely with errors that name the file.

Reading is ``torch.load(weights_only=True)``: tensors, containers and plain values only, so opening
a checkpoint someone sent you cannot run code from it. gan_lab's own checkpoints need nothing
else (the run config is stored as plain containers, the RNG state as tensors). ``trust=True``
(``trust_checkpoint=true`` at every entry point) is the explicit opt-in to full unpickling, for
foreign checkpoints from a source one trusts.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gan_lab.errors import BadFileError, MissingFileError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save with ``torch.save`` so that ``path`` is always either the old or the new file.

    A kill mid-write leaves only a temporary file beside it; the rename is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # fsync the directory so the rename itself survives a crash.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint_file(
    path: str | Path, map_location: Any = "cpu", trust: bool = False
) -> dict[str, Any]:
    """Load a gan_lab checkpoint, failing with a message that names the file and the problem.

    Safe by default (``weights_only=True``): a file whose pickle names any other global is
    refused before anything in it runs. ``trust=True`` unpickles everything.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as error:
        if trust or "GLOBAL" not in str(error):
            raise _unreadable(path, error) from error
        raise BadFileError(
            f"checkpoint {path} refused: it needs {', '.join(_unsafe_globals(path, error))}, "
            "and unpickling that could run code from the file. gan_lab's own checkpoints need "
            "no such thing; if you trust where the file came from, pass trust_checkpoint=true"
        ) from error
    except Exception as error:  # torch raises several types for a truncated/foreign file
        raise _unreadable(path, error) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise BadFileError(
            f"checkpoint {path} is not a Lightning checkpoint (no 'state_dict' key); "
            "pass a .ckpt file written by gan_lab"
        )
    return checkpoint


def _unreadable(path: Path, error: Exception) -> BadFileError:
    return BadFileError(
        f"checkpoint {path} is unreadable (truncated or not a torch checkpoint: {error}); "
        "use another checkpoint from the run's checkpoints/ folder (e.g. a periodic one)"
    )


def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The globals a safe load refused: read from the pickle's opcodes (nothing runs), or from
    torch's message for files in the legacy (non-zip) format the scan cannot read."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy format
        names = []
    return names or re.findall(r"GLOBAL (\S+)", str(error)) or ["a global torch does not allow"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose writes are atomic (temp file, fsync, rename) and whose reads
    (resume) are safe unless ``trust`` (the run's ``trust_checkpoint``)."""

    def __init__(self, trust: bool = False) -> None:
        super().__init__()
        self.trust = trust

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # Lightning's own weights_only argument is not used: the run's trust setting decides.
        return load_checkpoint_file(path, map_location=map_location or "cpu", trust=self.trust)

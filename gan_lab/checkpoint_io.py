"""Checkpoint files written atomically, and read back safely with errors that name the file.

Reading is ``torch.load(weights_only=True)``: tensors, containers and plain values only, so opening
a checkpoint someone sent you cannot run code from it. gan_lab's own checkpoints need nothing
else (the run config is stored as plain containers, the RNG state as tensors). ``trust=True``
(``trust_checkpoint=true`` at every entry point) is the explicit opt-in to full unpickling, for
foreign checkpoints from a source one trusts.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gan_lab.errors import BadFileError, DiskFullError, MissingFileError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save with ``torch.save`` so that ``path`` is always either the old or the new file.

    A kill mid-write leaves only a temporary file beside it (``remove_stale_temp_files``); the
    rename is atomic on POSIX. A full disk raises ``DiskFullError``.
    """
    with _replaced_atomically(Path(path)) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Make ``target`` a copy of the finished file ``source``, atomically as atomic_torch_save.

    A hard link where the filesystem has them: no bytes written, no new space taken, and safe
    because gan_lab never changes a file in place (a new ``source`` is a new file renamed over
    it, and the link keeps the old one). A byte copy elsewhere.
    """
    with _replaced_atomically(Path(target)) as tmp:
        tmp.unlink()  # os.link makes the name itself
        try:
            os.link(source, tmp)
        except OSError as error:
            if _disk_full_errno(error) is not None:
                raise
            with open(source, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())


# ".<name>.<random>.tmp", as tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp") names it;
# mkstemp's random part is lower-case letters, digits and "_".
_TEMP_NAME = re.compile(r"\..+\.ckpt\.[a-z0-9_]+\.tmp")


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes into ``folder`` left when killed mid-write
    (``.<name>.ckpt.<random>.tmp``, regular files only); return their paths.

    Only safe while nothing else writes into ``folder``: a run dir has one writer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in os.scandir(folder):
        if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


@contextmanager
def _replaced_atomically(path: Path) -> Iterator[Path]:
    """A new empty temporary file beside ``path`` for the caller to fill; then renamed onto
    ``path``. On any error it is deleted (its space freed) and ``path`` is left as it was;
    a full disk anywhere in the error's chain becomes a ``DiskFullError`` naming ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        code = _disk_full_errno(error) if isinstance(error, Exception) else None
        if code is None:
            raise
        kept = (
            f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        )
        disk_full = DiskFullError(
            f"disk full while writing {path} ({os.strerror(code)}): {kept} and the partial file "
            "was removed; free space on that filesystem or write the run to another directory"
        )
        disk_full.errno = code
        raise disk_full from error
    # fsync the directory so the rename itself survives a crash.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _disk_full_errno(error: BaseException) -> int | None:
    """ENOSPC or EDQUOT if an OSError with it is ``error`` or anywhere in its chain: torch.save
    raises ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos`` with the
    write's OSError only as the context it was raised during."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return link.errno
        pending += [link.__cause__, link.__context__]
    return None


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

"""Reader for the IDX format of (Fashion-)MNIST, with errors that say how to re-get the data."""

from __future__ import annotations

import gzip
import os

import numpy as np

from gan_lab.errors import BadFileError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)

REGET_HINT = (
    "install with `apt-get install dataset-fashion-mnist`, or set data.root=DIR holding the "
    "IDX files, or data.download=true when online"
)


def _read_bytes(path: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:  # gzip raises these on corrupt or cut-off archives
        raise BadFileError(f"{path}: cannot read ({err}); {REGET_HINT}") from err


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) into a uint8 array.

    Checks the magic number (``expected_magic``, else images 0x803 or labels 0x801), the header
    and that the payload is exactly the size the dims promise; raises ``BadFileError`` (a
    ``ValueError``) if not.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    allowed = (expected_magic,) if expected_magic is not None else (IMAGES_MAGIC, LABELS_MAGIC)
    if len(raw) < 4:
        raise BadFileError(f"{path}: truncated: header needs 4 bytes, got {len(raw)}; {REGET_HINT}")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in allowed:
        want = " or ".join(f"0x{m:08x}" for m in allowed)
        raise BadFileError(
            f"{path}: bad magic number 0x{magic:08x} (expected {want}); {REGET_HINT}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadFileError(
            f"{path}: truncated: header needs {header} bytes, got {len(raw)}; {REGET_HINT}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    got = len(raw) - header
    if got < expected:
        raise BadFileError(
            f"{path}: truncated: expected {expected} bytes of data for dims {dims}, got {got}; "
            f"{REGET_HINT}"
        )
    if got > expected:
        raise BadFileError(
            f"{path}: size mismatch: expected {expected} bytes of data for dims {dims}, got {got} "
            f"(trailing bytes); {REGET_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()

"""Image files under a folder: which files are images, which of those PIL can really read
(checked once, at start-up), and a ``Dataset`` that decodes them one at a time.

Any layout is accepted: a flat folder, torchvision's class sub-folders ``root/<class>/<image>``,
or deeper nesting. Labels are not read: the GANs here are unconditional.
"""

from __future__ import annotations

import logging
import os
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from gan_lab.errors import BadFileError, MissingFileError

log = logging.getLogger(__name__)

# torchvision's IMG_EXTENSIONS (what its ImageFolder reads), matched case-insensitively as it does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BadFiles = Literal["error", "skip"]  # data.bad_files: what an unreadable file does
BAD_FILES = typing.get_args(BadFiles)
_NAMED = 3  # bad files named in one message; the rest are counted
_JPEG_EOI = b"\xff\xd9"


def is_image_name(name: str) -> bool:
    """Whether a file called ``name`` counts as an image: not hidden, an image extension."""
    # Hidden files are never data: macOS leaves .DS_Store and ._<name> resource forks (which
    # carry an image's extension but are not images) beside copied files.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``root`` at any depth, hidden files and folders skipped.

    Depth first, each folder's files (sorted by name) before its sub-folders (sorted by name):
    for the class layout ``root/<class>/<image>`` that is torchvision ImageFolder's order
    (classes sorted, then files sorted), so existing runs see the same data in the same order.
    Symlinked folders are followed, as ImageFolder does, each real folder once.
    """
    found: list[Path] = []
    _collect(Path(root), found, visited=set())
    return found


def _collect(folder: Path, found: list[Path], visited: set[str]) -> None:
    real = os.path.realpath(folder)
    if real in visited:  # a symlink back up the tree would otherwise recurse forever
        return
    visited.add(real)
    with os.scandir(folder) as scan:
        # .ipynb_checkpoints/ and the like hold copies, not more data.
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    subfolders = [folder / e.name for e in entries if e.is_dir()]
    found += [folder / e.name for e in entries if e.is_file() and is_image_name(e.name)]
    for subfolder in subfolders:
        _collect(subfolder, found, visited)


def check_image(path: str | os.PathLike[str]) -> None:
    """Raise if ``path`` is not an image PIL can read to its end; cheap enough for every file.

    ``Image.open`` reads the header (other files fail here). PNGs then ``verify()``: the CRC of
    every chunk through IEND, without inflating, catches cut-off and corrupt files. For other
    formats ``verify()`` checks nothing (a cut-off JPEG passes it), so a JPEG must end with its
    end-of-image marker, and anything else (a JPEG with trailing bytes, BMP, TIFF, WebP ...) is
    decoded, JPEGs at 1/8 scale, which still reads every compressed byte.
    """
    with Image.open(path) as image:
        if image.format == "PNG":
            image.verify()
        elif image.format != "JPEG" or not _ends_with(path, _JPEG_EOI):
            image.draft(image.mode, (1, 1))  # no-op except for JPEG
            image.load()


def _ends_with(path: str | os.PathLike[str], marker: bytes) -> bool:
    with open(path, "rb") as file:
        file.seek(-len(marker), os.SEEK_END)
        return file.read() == marker


def describe_error(error: BaseException) -> str:
    """A few words on why an image could not be read, without the path (the caller names it)."""
    text = str(error)
    if isinstance(error, UnidentifiedImageError):  # its message repeats the path
        return "cannot identify image file"
    if "truncated" in text.lower() or isinstance(error, EOFError):
        return "truncated"
    return text.splitlines()[0][:80] if text.strip() else type(error).__name__


def _problem(path: Path) -> str | None:
    """Why ``path`` is not a readable image, or None if it is."""
    try:
        check_image(path)
    # PIL's format plugins report a corrupt file as whichever error they hit first (OSError,
    # SyntaxError, ValueError, struct.error, EOFError, DecompressionBombError ...).
    except Exception as error:
        return describe_error(error)
    return None


def _named(bad: list[tuple[Path, str]]) -> str:
    """The first few bad files as ``path (reason), ...``."""
    named = ", ".join(f"{path} ({reason})" for path, reason in bad[:_NAMED])
    return named + (", ..." if len(bad) > _NAMED else "")


def checked_images(root: str, bad_files: str = "error") -> list[str]:
    """The readable image files under ``root`` (``find_images``), each checked by
    ``check_image``; ``bad_files`` says what an unreadable one does.

    "error" raises ``BadFileError`` naming the first few and the count; "skip" leaves them out
    with one warning. No readable image at all is a ``MissingFileError``. Logs how many images
    were found (and how long the check took when it was slow).
    """
    start = time.perf_counter()
    if not Path(root).is_dir():
        raise MissingFileError(
            f"data.root={root}: image folder {os.path.abspath(root)} does not exist"
        )
    paths = find_images(root)
    problems = [_problem(path) for path in paths]
    good = [str(path) for path, problem in zip(paths, problems) if problem is None]
    bad = [(path, problem) for path, problem in zip(paths, problems) if problem is not None]
    if not good:
        raise MissingFileError(_no_images(root, bad))
    if bad:
        summary = f"{len(bad)} of {len(paths)} files are not readable images: {_named(bad)}"
        if bad_files == "error":
            raise BadFileError(
                f"data.root={root}: {summary}; remove or fix them, or set data.bad_files=skip "
                "to train on the rest"
            )
        log.warning("data.root=%s: skipping %s (data.bad_files=skip)", root, summary)
    seconds = time.perf_counter() - start
    took = f" (checked in {seconds:.1f} s)" if seconds > 1 else ""
    log.info("data.root=%s: found %d images%s", root, len(good), took)
    return good


def _no_images(root: str, bad: list[tuple[Path, str]]) -> str:
    unreadable = f" ({len(bad)} files could not be read: {_named(bad)})" if bad else ""
    return (
        f"data.root={root}: no readable images in {os.path.abspath(root)}{unreadable}; put "
        f"image files ({', '.join(IMAGE_EXTENSIONS)}) in it directly or in class sub-folders "
        f"{root}/<class>/<image>.png"
    )


class ImageFiles(Dataset):
    """The images at ``paths``, decoded on access: item ``i`` is ``(transform(image),)``.

    Each image is converted to RGB first, as torchvision's default loader does, so pixels match
    ``ImageFolder``'s. A file that can no longer be read (it changed after the start-up check)
    raises ``BadFileError`` naming it.
    """

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except Exception as error:  # whatever PIL raised for this file, as in _problem
            raise BadFileError(
                f"{path}: not a readable image ({describe_error(error)}), though it was when "
                "the run started; restore it, or remove it and restart"
            ) from error
        return (self.transform(rgb),)

"""Image folders as users have them: flat or class sub-folders or deeper, hidden files ignored,
unreadable files named at start-up (or skipped on request); an explicit Fashion-MNIST root is
used or refused, never silently replaced by the system copy."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_lab.data import image_files
from gan_lab.data.image_files import find_images
from gan_lab.data.images import FashionMNIST, ImageFolderImages
from gan_lab.errors import BadFileError, MissingFileError
from gan_lab.train import fit
from tests import processes
from tests.helpers import image_folder_overrides, truncate, write_images

ROOT = Path(__file__).resolve().parents[1]


def folder(root: Path, **kwargs) -> ImageFolderImages:
    """A streamed 8x8 RGB image-folder datamodule over ``root``."""
    return ImageFolderImages(str(root), **{"resolution": 8, "in_memory": False, **kwargs})


def first_batch(dm: ImageFolderImages) -> torch.Tensor:
    return next(iter(dm.train_dataloader()))


def pngs(n: int) -> list[str]:
    return [f"{i}.png" for i in range(n)]


@pytest.mark.parametrize("in_memory", [False, True])
def test_flat_folder_trains(tmp_path: Path, caplog, in_memory: bool) -> None:
    write_images(tmp_path, pngs(6))
    dm = folder(tmp_path, batch_size=3, in_memory=in_memory)
    with caplog.at_level(logging.INFO, logger="gan_lab.data.image_files"):
        assert dm.num_samples("train") == 6
    assert "found 6 images" in caplog.text and str(tmp_path) in caplog.text
    assert dm.sample_shape == (3, 8, 8)
    batch = first_batch(dm)
    assert batch.shape == (1, 3, 3, 8, 8) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1 and batch.std() > 0.1


@pytest.mark.parametrize("channels", [1, 3])
def test_class_subfolders_give_imagefolders_pixels_in_its_order(
    tmp_path: Path, channels: int
) -> None:
    """Same files, same tensors, same order as torchvision's ImageFolder with today's transforms:
    class folders sorted by name (``a`` before ``a-b``, though ``a-b/`` sorts before ``a/`` as
    text), files sorted as text within each (``10.png`` before ``2.png``)."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    names = [f"{c}/{f}" for c in ("b", "a-b", "a") for f in ("2.png", "10.png", "1.jpg")]
    write_images(tmp_path, names, size=(10, 13))  # not square: Resize and CenterCrop both act
    steps = [transforms.Resize(8), transforms.CenterCrop(8)]
    steps += [transforms.Grayscale(1)] if channels == 1 else []
    reference = ImageFolder(
        str(tmp_path), transform=transforms.Compose(steps + [transforms.PILToTensor()])
    )
    expected = torch.stack([image for image, _ in reference])

    dm = ImageFolderImages(str(tmp_path), resolution=8, channels=channels)
    assert torch.equal(dm.images("train"), expected)
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in reference.samples] == [
        p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)
    ]


def test_nested_folders_found_and_hidden_files_skipped(tmp_path: Path) -> None:
    kept = write_images(tmp_path, ["a.png", "sub/deeper/b.JPG", "sub/c.webp"])
    write_images(tmp_path, [".ipynb_checkpoints/a-checkpoint.png", "sub/.hidden.png"])
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "sub" / "._b.JPG").write_bytes(b"\0\5\26\7AppleDouble")  # macOS resource fork
    (tmp_path / "notes.txt").write_text("not an image, and not named like one")
    assert find_images(tmp_path) == [kept[0], kept[2], kept[1]]  # sorted: files, then folders
    dm = folder(tmp_path, batch_size=3)
    assert dm.num_samples("train") == 3
    assert first_batch(dm).shape == (1, 3, 3, 8, 8)


def assert_one_line_naming(error: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


def test_non_image_named_with_count(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", pngs(4))
    (tmp_path / "cats" / "x.png").write_text("this is not a PNG")
    with pytest.raises(BadFileError) as error:
        folder(tmp_path).num_samples("train")
    assert_one_line_naming(
        error,
        f"data.root={tmp_path}",
        "1 of 5 files",
        f"{tmp_path / 'cats' / 'x.png'} (cannot identify image file)",
        "data.bad_files=skip",
    )


def test_truncated_png_named_at_start_up(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", pngs(4))
    (bad,) = write_images(tmp_path / "cats", ["cut.png"], size=(32, 32))
    truncate(bad)
    with pytest.raises(BadFileError) as error:
        folder(tmp_path).num_samples("train")  # what start-up validation asks, before any batch
    assert_one_line_naming(error, f"{bad} (truncated)", "1 of 5 files")


def test_truncated_jpeg_named_at_start_up(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", pngs(4))
    (bad,) = write_images(tmp_path / "cats", ["cut.jpg"], size=(64, 64))
    truncate(bad)
    with Image.open(bad) as image:
        image.verify()  # PIL's verify() passes a cut-off JPEG: the check must do more
    with pytest.raises(BadFileError) as error:
        folder(tmp_path).num_samples("train")
    assert_one_line_naming(error, f"{bad} (truncated)", "1 of 5 files")


def test_at_most_three_bad_files_named(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", pngs(2))
    for name in ("p.png", "q.png", "r.png", "s.png"):
        (tmp_path / "cats" / name).write_bytes(b"")
    with pytest.raises(BadFileError) as error:
        folder(tmp_path).num_samples("train")
    message = assert_one_line_naming(error, "4 of 6 files", "p.png", "q.png", "r.png")
    assert "s.png" not in message


@pytest.mark.parametrize("bad_files", ["error", "skip"])
def test_no_readable_image_is_missing_file_error(tmp_path: Path, bad_files: str) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "x.png").write_text("nope")
    with pytest.raises(MissingFileError) as error:
        folder(tmp_path, bad_files=bad_files).num_samples("train")
    assert_one_line_naming(
        error, f"data.root={tmp_path}", "no readable images", "x.png", "class sub-folders"
    )


def test_skip_logs_count_and_trains_on_the_rest(tmp_path: Path, caplog) -> None:
    write_images(tmp_path / "cats", pngs(4))
    (tmp_path / "cats" / "x.png").write_text("nope")
    truncate(write_images(tmp_path / "cats", ["y.jpg"], size=(64, 64))[0])
    dm = folder(tmp_path, batch_size=4, bad_files="skip")
    with caplog.at_level(logging.WARNING, logger="gan_lab.data.image_files"):
        assert dm.num_samples("train") == 4
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipping 2 of 6 files" in warning.getMessage()
    assert "x.png" in warning.getMessage() and "y.jpg" in warning.getMessage()
    assert first_batch(dm).shape == (1, 4, 3, 8, 8)


def test_bad_files_typo_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.bad_files=skp: must be 'error' .* or 'skip'"):
        folder(tmp_path, bad_files="skp")


def test_files_checked_once_per_datamodule(tmp_path: Path, monkeypatch) -> None:
    write_images(tmp_path / "cats", pngs(4))
    checked: list[str] = []
    real_check = image_files.check_image
    monkeypatch.setattr(image_files, "check_image", lambda p: checked.append(p) or real_check(p))
    dm = folder(tmp_path, batch_size=2)
    for _ in range(3):
        assert dm.num_samples("train") == dm.num_samples("val") == 4
    first_batch(dm)
    dm.real_samples(2)
    assert len(checked) == 4


def test_file_corrupted_after_the_check_is_named(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "cats", pngs(4))
    dm = folder(tmp_path, batch_size=4)
    assert dm.num_samples("train") == 4
    truncate(paths[2])  # changed on disk between start-up and the first batch
    with pytest.raises(BadFileError) as error:
        first_batch(dm)
    assert_one_line_naming(error, str(paths[2]), "truncated")


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir()], ids=["missing", "empty"])
def test_fashion_mnist_explicit_root_without_files(tmp_path: Path, make) -> None:
    """Refused even where /usr/share/datasets/fashion-mnist holds a copy it used to fall back to."""
    root = tmp_path / "fashion"
    make(root)
    with pytest.raises(MissingFileError) as error:
        FashionMNIST(root=str(root)).num_samples("train")
    assert_one_line_naming(error, f"data.root={root}", "data.download=true", "data.root=null")


def test_flat_folder_end_to_end(make_config, tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_images(root, pngs(8))
    run = fit(make_config(*image_folder_overrides(root, 0, "train.iterations=2")))
    assert run.module.iteration == 2


def test_bad_file_fails_before_training(make_config, monkeypatch, tmp_path: Path) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("training started despite a bad file")

    monkeypatch.setattr("lightning.pytorch.Trainer.fit", no_training)
    monkeypatch.setattr("gan_lab.gan_module.GANModule.training_step", no_training)
    root = tmp_path / "images"
    write_images(root / "cats", pngs(8))
    (root / "cats" / "x.png").write_text("nope")
    with pytest.raises(BadFileError, match="x.png"):
        fit(make_config(*image_folder_overrides(root, 0, "train.iterations=2")))


def test_file_corrupted_mid_run_with_workers_is_one_line_and_the_process_exits(tmp_path: Path):
    """A decode error inside a DataLoader worker reaches the main process as one line naming the
    file (not torch's wrapped worker traceback), and the process then exits: before, its workers
    (which ignore SIGTERM) hung multiprocessing's exit handler for ever."""
    paths = write_images(tmp_path / "cats", pngs(8))
    script = f"""
import sys
from pathlib import Path
from tests.helpers import truncate
from gan_lab.data.images import ImageFolderImages
from gan_lab.errors import BadFileError
dm = ImageFolderImages(
    {str(tmp_path)!r}, resolution=8, batch_size=4, in_memory=False, num_workers=2
)
assert dm.num_samples("train") == 8
truncate(Path({str(paths[5])!r}))
try:
    for _ in dm.train_dataloader():
        pass
except BadFileError as error:
    print("error:", error)
    sys.exit(1)
"""
    result = processes.run([sys.executable, "-c", script], timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and str(paths[5]) in lines[0], result.stdout + result.stderr[-2000:]
    assert "Traceback" not in result.stdout

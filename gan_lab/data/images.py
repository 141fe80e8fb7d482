"""Image datasets scaled to [-1, 1], shape (C, H, W): Digits, Fashion-MNIST, torchvision, folders.

Images are kept as uint8 in memory (Digits as float) and turned into float32 per batch by the
stream, so even 64x64 Fashion-MNIST stays ~250 MB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from gan_lab.arguments import Count, NonNegativeInt
from gan_lab.data.base import GANDataModule, check_split
from gan_lab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, REGET_HINT, read_idx
from gan_lab.data.image_files import BAD_FILES, BadFiles, ImageFiles, checked_images
from gan_lab.data.streams import LoaderStream, TensorBatchStream, to_unit_range
from gan_lab.errors import BadFileError, ConfigError, MissingFileError

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DIGITS_TEST_FRACTION = 0.2


def _canonical_split(split: str) -> str:
    # These sets ship only train and test; validation metrics use the held-out test split.
    return "test" if check_split(split) == "val" else split


def _resize(images: Tensor, resolution: int, chunk: int = 4096) -> Tensor:
    """Bilinear (antialiased) resize of (N, C, H, W) to square ``resolution``, keeping dtype."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = []
    for part in images.split(chunk):  # chunks bound the float32 copy for large sets
        y = F.interpolate(
            part.float(), size=(resolution, resolution), mode="bilinear", antialias=True
        )
        if images.dtype == torch.uint8:
            y = y.round().clamp(0, 255).to(torch.uint8)
        out.append(y)
    return torch.cat(out)


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits: uint8 images (N, 8, 8) with values 0..16, int64 labels (N,).

    The split is deterministic: the last 20% of the 1797 images are the test split.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    split = _canonical_split(split)
    bunch = sk_load_digits()
    images = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    n_train = len(images) - round(DIGITS_TEST_FRACTION * len(images))
    if split == "train":
        return images[:n_train], labels[:n_train]
    return images[n_train:], labels[n_train:]


def _find_idx(directory: str, name: str) -> str | None:
    for candidate in (f"{name}.gz", name):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_fashion_mnist(
    root: str | None = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as uint8 images (N, 28, 28) and int64 labels (N,).

    Looks in ``root`` (and torchvision's ``root/FashionMNIST/raw``) or, with ``root=None``, in
    /usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``); downloads into ``root``
    (default ./data) with torchvision if ``download``; else raises ``MissingFileError``. A root
    that lacks the files is never replaced by the system copy: the run would train on other
    data than the one asked for.
    """
    split = _canonical_split(split)
    image_name, label_name = _FASHION_FILES[split]
    if root is not None:
        searched = [root, os.path.join(root, "FashionMNIST", "raw")]
    else:
        searched = [FASHION_MNIST_SYSTEM_DIR]
    for directory in searched:
        image_path, label_path = _find_idx(directory, image_name), _find_idx(directory, label_name)
        if image_path and label_path:
            images = read_idx(image_path, expected_magic=IMAGES_MAGIC)
            labels = read_idx(label_path, expected_magic=LABELS_MAGIC).astype(np.int64)
            if len(images) != len(labels):
                raise BadFileError(
                    f"{image_path} has {len(images)} images but {label_path} has "
                    f"{len(labels)} labels; {REGET_HINT}"
                )
            return images, labels
    if download:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        download_root = root if root is not None else "data"
        with _download_errors("FashionMNIST", download_root):
            TorchvisionFashionMNIST(download_root, train=split == "train", download=True)
        return load_fashion_mnist(download_root, split, download=False)
    files = f"Fashion-MNIST {split} files ({image_name}[.gz], {label_name}[.gz])"
    if root is None:
        raise MissingFileError(
            f"{files} not found; searched {', '.join(searched)}. To fix: {REGET_HINT}"
        )
    where = "does not exist" if not os.path.isdir(root) else f"holds no {files}"
    raise MissingFileError(
        f"data.root={root}: {os.path.abspath(root)} {where} (looked in it and in "
        f"{os.path.join(root, 'FashionMNIST', 'raw')}). To fix: set data.root=DIR holding the "
        f"IDX files, data.download=true to download them into it when online, or data.root=null "
        f"to use {FASHION_MNIST_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)"
    )


class ImageDataModule(GANDataModule):
    """Base for image sets: subclasses implement ``_load(split)`` -> (N, C, H, W) tensor.

    ``_load`` returns uint8 pixels (or float already in [-1, 1]). ``in_memory=False`` streams
    ``_dataset(split)`` through a worker ``DataLoader`` instead, in the same seeded order and
    just as exactly resumable.
    ``device_resident=True`` moves the train tensor to the trainer's device in ``setup``.
    """

    kind = "image"
    metrics = "features"

    def __init__(
        self,
        batch_size: Count = 64,
        seed: int = 0,
        batches_per_step: Count = 1,
        in_memory: bool = True,
        num_workers: NonNegativeInt = 0,
        device_resident: bool = False,
    ) -> None:
        super().__init__(batch_size, seed, batches_per_step, in_memory)
        self.num_workers = num_workers
        self.device_resident = device_resident
        self._cache: dict[str, Tensor] = {}

    def _load(self, split: str) -> Tensor:
        raise NotImplementedError

    def _dataset(self, split: str) -> Dataset:
        """Dataset of single images for the DataLoader path; default wraps the loaded tensor."""
        return TensorDataset(self.images(split))

    def images(self, split: str = "train") -> Tensor:
        """The whole split as one (N, C, H, W) tensor, loaded once and cached."""
        split = _canonical_split(split)
        if split not in self._cache:
            self._cache[split] = self._load(split)
        return self._cache[split]

    def setup(self, stage: str | None = None) -> None:
        if stage not in (None, "fit") or not self.in_memory:
            return
        train = self.images("train")
        if self.device_resident and self.trainer is not None:
            self._cache["train"] = train.to(self.trainer.strategy.root_device)

    def train_dataloader(self) -> TensorBatchStream | LoaderStream:
        if self.in_memory:
            return TensorBatchStream(
                self.images("train"),
                self.batch_size,
                self.batches_per_step,
                self.stream_seed(),
            )
        return LoaderStream(
            self._dataset("train"),
            self.batch_size,
            self.batches_per_step,
            self.stream_seed(),
            num_workers=self.num_workers,
        )

    def num_samples(self, split: str = "train") -> int:
        """Number of images in ``split``."""
        if self.in_memory:
            return len(self.images(split))
        return len(self._dataset(_canonical_split(split)))  # type: ignore[arg-type]

    def real_samples(self, n: int, split: str = "train", replace: bool = False) -> Tensor:
        """``n`` images in [-1, 1] drawn with a generator seeded by ``seed`` and ``split``.

        Without replacement by default; asking for more than the split holds raises
        ``ValueError`` (pass ``replace=True`` to sample with replacement instead), because
        silently duplicated images would bias metrics such as FID.
        """
        size = self.num_samples(split)
        if n > size and not replace:
            raise ValueError(
                f"requested {n} real samples but the {split!r} split of "
                f"{type(self).__name__} has {size}; ask for at most {size} or pass replace=True"
            )
        generator = torch.Generator().manual_seed(self._split_seed(split))
        if replace:
            idx = torch.randint(size, (n,), generator=generator)
        else:
            idx = torch.randperm(size, generator=generator)[:n]
        if self.in_memory:
            data = self.images(split)
            return to_unit_range(data[idx.to(data.device)])
        dataset = self._dataset(_canonical_split(split))
        items = [dataset[int(i)] for i in idx]
        return to_unit_range(torch.stack([torch.as_tensor(item[0]) for item in items]))


class Digits(ImageDataModule):
    """scikit-learn 8x8 digits (1797 images, 1 channel), optionally resized to ``resolution``."""

    classifier = "digits"

    def __init__(
        self, resolution: Count | None = None, batch_size: Count = 64, **kwargs: Any
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.resolution = resolution or 8
        self.sample_shape = (1, self.resolution, self.resolution)

    def _load(self, split: str) -> Tensor:
        images, _ = load_digits(split)
        x = torch.from_numpy(images).float().unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
        return _resize(x, self.resolution)


class FashionMNIST(ImageDataModule):
    """Fashion-MNIST (1 channel, 28x28 or resized once at load to ``resolution``)."""

    classifier = "fashion_mnist"

    def __init__(
        self,
        root: str | None = None,
        download: bool = False,
        resolution: Count = 28,
        batch_size: Count = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.root = root
        self.download = download
        self.resolution = resolution
        self.sample_shape = (1, resolution, resolution)

    def _load(self, split: str) -> Tensor:
        images, _ = load_fashion_mnist(self.root, split, self.download)
        return _resize(torch.from_numpy(images).unsqueeze(1), self.resolution)


@contextmanager
def _download_errors(name: str, root: str) -> Iterator[None]:
    """A failed download (no network, a refused URL) becomes one line naming the fix."""
    try:
        yield
    except OSError as err:  # URLError, socket and HTTP errors are all OSErrors
        reason = getattr(err, "reason", None) or err
        raise MissingFileError(
            f"data.download=true: downloading {name} into {os.path.abspath(root)} failed "
            f"({reason}); offline, copy torchvision's {name} files there from a machine with "
            "internet (or set data.root=DIR holding them)"
        ) from err


# name -> (torchvision class name, channels, native size, on-disk layout for the error message)
_TORCHVISION_SETS = {
    "MNIST": ("MNIST", 1, 28, "MNIST/raw/*-idx?-ubyte"),
    "FashionMNIST": ("FashionMNIST", 1, 28, "FashionMNIST/raw/*-idx?-ubyte"),
    "CIFAR10": ("CIFAR10", 3, 32, "cifar-10-batches-py/"),
}


class TorchvisionImages(ImageDataModule):
    """A torchvision dataset (``name`` = "MNIST", "FashionMNIST" or "CIFAR10") held in memory.

    The whole split is read into one uint8 tensor from torchvision's ``.data`` attribute.
    """

    def __init__(
        self,
        name: Literal["MNIST", "FashionMNIST", "CIFAR10"] = "MNIST",
        root: str = "data",
        download: bool = False,
        resolution: Count | None = None,
        batch_size: Count = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if name not in _TORCHVISION_SETS:
            raise ValueError(f"unknown dataset {name!r}; expected one of {list(_TORCHVISION_SETS)}")
        self.name = name
        self.root = root
        self.download = download
        _, channels, size, _ = _TORCHVISION_SETS[name]
        self.resolution = resolution or size
        self.sample_shape = (channels, self.resolution, self.resolution)

    def _load(self, split: str) -> Tensor:
        import torchvision.datasets

        class_name, _, _, layout = _TORCHVISION_SETS[self.name]
        cls = getattr(torchvision.datasets, class_name)
        try:
            with _download_errors(self.name, self.root):
                dataset = cls(self.root, train=split == "train", download=self.download)
        except RuntimeError as err:  # torchvision's "Dataset not found" when files are missing
            raise MissingFileError(
                f"{self.name} not found under {os.path.abspath(self.root)} (expected "
                f"{layout}): {err}. To fix: set data.root=DIR holding torchvision's files, or "
                "data.download=true when online"
            ) from err
        data = torch.as_tensor(np.asarray(dataset.data))
        # MNIST-like sets are (N, H, W); CIFAR is (N, H, W, C).
        data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()
        return _resize(data, self.resolution)


class ImageFolderImages(ImageDataModule):
    """Every image file under ``root``: a flat folder, class sub-folders ``root/<class>/<image>``
    (torchvision's ``ImageFolder`` layout, read in its order) or deeper; hidden files skipped.

    The files are found and checked once, when the datamodule is first asked for its data (at
    start-up, by validation): unreadable ones raise ``BadFileError`` naming them, or are left
    out with ``bad_files="skip"`` (see ``gan_lab.data.image_files.checked_images``).
    Every split reads the same folder (there is no held-out set), so metrics compare with
    training images. Images are resized (shorter side) and center-cropped to ``resolution``.
    """

    def __init__(
        self,
        root: str,
        resolution: Count = 64,
        channels: Literal[1, 3] = 3,
        batch_size: Count = 64,
        bad_files: BadFiles = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if bad_files not in BAD_FILES:
            raise ConfigError(
                "data.bad_files",
                bad_files,
                "must be 'error' (stop and name the unreadable files) or 'skip' (train on the "
                "rest)",
            )
        self.root = root
        self.resolution = resolution
        self.channels = channels
        self.bad_files = bad_files
        self.sample_shape = (channels, resolution, resolution)
        self._paths: list[str] | None = None

    def image_paths(self) -> list[str]:
        """The readable image files under ``root``, found and checked on first use only."""
        if self._paths is None:
            self._paths = checked_images(self.root, self.bad_files)
        return self._paths

    def _transform(self) -> Callable[[Any], Tensor]:
        from torchvision import transforms

        steps = [transforms.Resize(self.resolution), transforms.CenterCrop(self.resolution)]
        if self.channels == 1:
            steps.append(transforms.Grayscale(1))  # after the crop, as before: same pixels
        steps.append(transforms.PILToTensor())  # uint8; scaled to [-1, 1] per batch
        return transforms.Compose(steps)

    def _dataset(self, split: str) -> Dataset:
        return ImageFiles(self.image_paths(), self._transform())

    def _load(self, split: str) -> Tensor:
        dataset = self._dataset(split)
        return torch.stack([dataset[i][0] for i in range(len(dataset))])

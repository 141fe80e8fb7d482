"""Data modules: toy distributions and image sets behind one ``GANDataModule`` interface."""

from gan_lab.data.base import METRIC_SUITES, GANDataModule, batch_shortfall, check_split
from gan_lab.data.idx import read_idx
from gan_lab.data.images import (
    Digits,
    FashionMNIST,
    ImageFolderImages,
    TorchvisionImages,
    load_digits,
    load_fashion_mnist,
)
from gan_lab.data.streams import (
    LoaderStream,
    SamplerStream,
    TensorBatchStream,
    to_pixels,
    to_unit_range,
)
from gan_lab.data.toy import Gaussian1D, Grid, Ring

__all__ = [
    "Digits",
    "FashionMNIST",
    "GANDataModule",
    "Gaussian1D",
    "Grid",
    "ImageFolderImages",
    "LoaderStream",
    "METRIC_SUITES",
    "Ring",
    "SamplerStream",
    "TensorBatchStream",
    "TorchvisionImages",
    "batch_shortfall",
    "check_split",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
    "to_pixels",
    "to_unit_range",
]

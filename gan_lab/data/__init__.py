"""Data modules: toy distributions and image sets behind one ``GANDataModule`` interface."""

from gan_lab.data.base import GANDataModule
from gan_lab.data.idx import read_idx
from gan_lab.data.images import (
    Digits,
    FashionMNIST,
    ImageFolderImages,
    TorchvisionImages,
    load_digits,
    load_fashion_mnist,
)
from gan_lab.data.streams import LoaderStream, SamplerStream, TensorBatchStream
from gan_lab.data.toy import Gaussian1D, Grid, Ring

__all__ = [
    "Digits",
    "FashionMNIST",
    "GANDataModule",
    "Gaussian1D",
    "Grid",
    "ImageFolderImages",
    "LoaderStream",
    "Ring",
    "SamplerStream",
    "TensorBatchStream",
    "TorchvisionImages",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
]

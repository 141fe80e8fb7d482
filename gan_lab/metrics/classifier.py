"""A small CNN classifier whose penultimate features stand in for Inception offline.

Features from a classifier trained on the dataset itself (the KID paper's LeNet features,
TF-GAN's MNIST FID) give FIDs on their own scale: never compare them with Inception FIDs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.errors import MissingFileError
from gan_lab.metrics.extractor import FeatureExtractor
from gan_lab.metrics.protocol import file_sha256

if TYPE_CHECKING:
    from gan_lab.data.base import GANDataModule

WEIGHTS_DIR = Path(__file__).parent / "weights"


class SmallCNN(nn.Module):
    """Two conv blocks + a 128-d feature layer + a linear head; input (B, C, R, R) in [-1, 1]."""

    def __init__(
        self, in_channels: int = 1, resolution: int = 28, num_classes: int = 10, width: int = 32
    ):
        super().__init__()
        self.in_channels, self.resolution, self.num_classes, self.width = (
            in_channels,
            resolution,
            num_classes,
            width,
        )
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate 128-d features."""
        return self.features(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))

    def save(self, path: Path, info: dict) -> None:
        """Weights + a JSON beside them recording how they were made and how good they are."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arch = {
            "in_channels": self.in_channels,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "width": self.width,
        }
        torch.save({"arch": arch, "state_dict": self.state_dict()}, path)
        path.with_suffix(".json").write_text(json.dumps({**info, "arch": arch}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SmallCNN:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"classifier weights not found: {path}; train them with "
                "`python -m gan_lab.metrics.train_classifier --data fashion_mnist` "
                "or choose eval=inception / eval=none"
            )
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**blob["arch"])
        model.load_state_dict(blob["state_dict"])
        return model.eval()


class ClassifierFeatures(FeatureExtractor):
    """Images in [-1, 1] -> the classifier's 128-d penultimate features (and its logits, for
    the Inception Score on this classifier)."""

    # ``for_data`` reads the classifier the DataModule declares (unless given ``weights``):
    # validation refuses this extractor for data that declares none.
    needs_data_classifier: ClassVar[bool] = True

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        self.weights = Path(weights)
        self.classifier = SmallCNN.load(weights).requires_grad_(False)
        self.num_features = 128

    @classmethod
    def for_data(
        cls, datamodule: GANDataModule, weights: str | None = None
    ) -> ClassifierFeatures | None:
        """The committed classifier the datamodule declares (``classifier = "fashion_mnist"`` ->
        ``weights/fashion_mnist_classifier.pt``), or None when it declares none or the file is
        missing."""
        if weights is None:
            if datamodule.classifier is None:
                return None
            path = classifier_weights_for(datamodule.classifier)
            if not path.is_file():
                return None
            weights = str(path)
        return cls(weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.embed(self._resized(x))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.classifier.embed(self._resized(x))
        return features, self.classifier.head(features)

    def protocol(self) -> dict[str, Any]:
        size = self.classifier.resolution
        return {
            "name": "classifier",
            "weights": self.weights.name,
            "sha256": file_sha256(self.weights),
            "num_features": self.num_features,
            "preprocessing": {
                "input": "float in [-1, 1]",
                "resize_to": [size, size],
                "interpolation": "bilinear, antialias (only when the size differs)",
            },
        }

    def _resized(self, x: Tensor) -> Tensor:
        x = x.float()
        size = self.classifier.resolution
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x


def classifier_weights_for(dataset: str) -> Path:
    """The committed weights file of a dataset's classifier (``fashion_mnist``, ``digits``)."""
    return WEIGHTS_DIR / f"{dataset}_classifier.pt"

"""torchmetrics' InceptionV3 (the FID standard) with weights found offline or failing fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gan_lab.data.streams import to_pixels
from gan_lab.errors import MissingFileError
from gan_lab.metrics.extractor import FeatureExtractor
from gan_lab.metrics.protocol import file_sha256

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


def hub_weights_path() -> Path:
    """Where torch-fidelity keeps (and downloads) the weights: the torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def find_inception_weights(weights_path: str | None, allow_download: bool = False) -> str | None:
    """The weights file to use, or None to let torch-fidelity download it (only if allowed).

    Raises at once, never hangs on a network that is not there, when the file is nowhere.
    """
    if weights_path:
        if not Path(weights_path).is_file():
            raise MissingFileError(
                f"eval.evaluator.extractor.weights_path={weights_path}: file not found"
            )
        return str(weights_path)
    cached = hub_weights_path()
    if cached.is_file():
        return str(cached)
    if allow_download:
        return None
    raise MissingFileError(
        f"Inception weights {INCEPTION_WEIGHTS_FILE} not found (offline). Download it from "
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        f"{INCEPTION_WEIGHTS_FILE} on a machine with internet, then either put it at {cached} "
        "or pass eval.evaluator.extractor.weights_path=/path/to/it; "
        "eval.evaluator.extractor.allow_download=true downloads it when online; eval=classifier "
        "uses offline classifier features instead"
    )


class InceptionFeatures(FeatureExtractor):
    """Images in [-1, 1] (1 or 3 channels) -> 2048-d pool features of FID's InceptionV3, and
    its 1008 logits (without the bias, as torch-fidelity's Inception Score) from them.

    ``antialias=False`` resizes like the original TF implementation, for comparing with
    published FIDs (torchmetrics >= 1.8 antialiases by default).
    """

    def __init__(
        self, weights_path: str | None = None, antialias: bool = False, allow_download: bool = False
    ) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.weights_path = find_inception_weights(weights_path, allow_download)
        self.antialias = antialias
        self.inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=self.weights_path,
            antialias=antialias,
        )
        self.num_features = 2048

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.inception(to_pixels(x)).reshape(x.shape[0], -1)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self(x)
        # torch-fidelity's "logits_unbiased" (its Inception Score's input): the head without
        # its bias, computed from the pool features rather than by a second pass.
        return features, features.mm(self.inception.fc.weight.T)

    def protocol(self) -> dict[str, Any]:
        # Downloaded by torch-fidelity (allow_download) when no file was found before.
        path = self.weights_path or str(hub_weights_path())
        size = self.inception.INPUT_IMAGE_SIZE
        return {
            "name": "inception",
            "weights": Path(path).name,
            "sha256": file_sha256(path) if Path(path).is_file() else "unknown",
            "num_features": self.num_features,
            "preprocessing": {
                "input": "uint8 pixels of images in [-1, 1] (gray repeated to RGB)",
                "resize_to": [size, size],
                "interpolation": "bilinear, antialias"
                if self.antialias
                else "bilinear as TF1 (no antialias, as the original FID)",
            },
        }

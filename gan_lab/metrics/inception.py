"""torchmetrics' InceptionV3 (the FID standard) with weights found offline or failing fast."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from gan_lab.data.streams import to_pixels
from gan_lab.errors import MissingFileError

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


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
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
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


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] (1 or 3 channels) -> 2048-d pool features of FID's InceptionV3.

    ``antialias=False`` resizes like the original TF implementation, for comparing with
    published FIDs (torchmetrics >= 1.8 antialiases by default).
    """

    def __init__(
        self, weights_path: str | None = None, antialias: bool = False, allow_download: bool = False
    ) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=find_inception_weights(weights_path, allow_download),
            antialias=antialias,
        )
        self.num_features = 2048

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.inception(to_pixels(x)).reshape(x.shape[0], -1)

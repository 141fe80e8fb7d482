"""What a feature extractor of the FID family declares: features, logits, protocol."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gan_lab.metrics.protocol import module_sha256


class FeatureExtractor(nn.Module):
    """Images in [-1, 1] -> ``num_features``-d features (``forward``), the class logits from
    the same pass where the network has a head (``features_and_logits``, for the Inception
    Score), and ``protocol()``: what a number computed on these features depends on (the
    weights and how images are preprocessed), recorded with every such number
    (gan_lab.metrics.protocol)."""

    num_features: int

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features and class logits of ``x`` in one pass; None for logits without a head."""
        return self(x), None

    def protocol(self) -> dict[str, Any]:
        """The extractor's part of the protocol: name, weights file and its sha256, input
        preprocessing. Subclasses say what they do; this default gives the class and a sha256
        of the weights it holds (it cannot see the preprocessing in ``forward``)."""
        return {
            "name": type(self).__name__,
            "num_features": self.num_features,
            "state_sha256": module_sha256(self),
        }

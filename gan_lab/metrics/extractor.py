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
        return _weights_protocol(self)


def features_and_logits(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """A ``FeatureExtractor``'s features and logits; any other module's (a torchmetrics-style
    one) features, without logits."""
    if isinstance(module, FeatureExtractor):
        return module.features_and_logits(x)
    return module(x), None


def extractor_protocol(module: nn.Module) -> dict[str, Any]:
    """A ``FeatureExtractor``'s ``protocol()``; for any other module its class and the sha256 of
    its weights, which say which instance made features cached under it."""
    if isinstance(module, FeatureExtractor):
        return module.protocol()
    return _weights_protocol(module)


def _weights_protocol(module: nn.Module) -> dict[str, Any]:
    return {
        "name": type(module).__name__,
        "num_features": module.num_features,
        "state_sha256": module_sha256(module),
    }

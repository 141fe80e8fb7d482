"""FID and KID (torchmetrics) on any feature extractor, real statistics computed once."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan_lab.rng_state import isolated_rng


class FeatureDistance:
    """FID + KID between real and generated images on one extractor's features.

    Real features are added once (``add_real``) and kept across ``compute_fake`` calls. KID's
    random subsets are drawn with ``seed`` on an isolated RNG: the same images give the same KID,
    and the caller's RNG stream is left as it was.

    Under DDP each rank adds its share of the images, with ``total`` the number over all ranks;
    torchmetrics gathers the ranks' states in ``compute`` (in rank order, which KID's subsets
    depend on: give each rank a contiguous share, gan_lab.distributed.shard).
    """

    def __init__(self, extractor: nn.Module, kid_subset_size: int = 1000, seed: int = 0) -> None:
        self.extractor = extractor.eval()
        # Both metrics would run the extractor on every batch; they get the features instead,
        # so each image goes through the extractor once (2x faster evaluation).
        given = _GivenFeatures(extractor.num_features)
        self.fid = FrechetInceptionDistance(feature=given, reset_real_features=False)
        self.kid = KernelInceptionDistance(
            feature=given, reset_real_features=False, subset_size=kid_subset_size
        )
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.num_real = 0

    def to(self, device: torch.device) -> FeatureDistance:
        self.extractor = self.extractor.to(device)
        self.fid, self.kid = self.fid.to(device), self.kid.to(device)
        return self

    @torch.inference_mode()
    def add_real(self, images: Tensor, batch_size: int = 500, total: int | None = None) -> None:
        """Add real ``images`` (this rank's share of ``total``; default: all of them)."""
        for batch in images.split(batch_size):
            self._update(batch, real=True)
        self.num_real += len(images) if total is None else total

    @torch.inference_mode()
    def compute_fake(
        self, images: Tensor, batch_size: int = 500, total: int | None = None
    ) -> dict[str, float]:
        """FID and KID (mean) of ``images`` (this rank's share of ``total``) against the stored
        real features."""
        self.fid.reset()
        self.kid.reset()
        for batch in images.split(batch_size):
            self._update(batch, real=False)
        # KID's subsets cannot be larger than the smaller sample set.
        num_fake = len(images) if total is None else total
        self.kid.subset_size = min(self.kid_subset_size, self.num_real, num_fake)
        with isolated_rng(self.seed, self.kid.device):
            kid_mean, _ = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean)}

    def _update(self, images: Tensor, real: bool) -> None:
        features = self.extractor(images.to(self.fid.device))
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)


class _GivenFeatures(nn.Module):
    """Identity "extractor" for torchmetrics: ``update`` receives features already extracted."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features

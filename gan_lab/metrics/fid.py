"""The feature metrics of generated images, real features given once: FID and KID
(torchmetrics), improved precision/recall, density/coverage and the Inception Score
(gan_lab.metrics.fidelity), all from one extractor pass per image."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan_lab.distributed import gather_shards, shard
from gan_lab.metrics.extractor import features_and_logits
from gan_lab.metrics.fidelity import fidelity_diversity, inception_score, knn_radii
from gan_lab.rng_state import isolated_rng


class FeatureDistance:
    """Real-vs-generated metrics on one extractor's features.

    The real side is set once (``set_real_features``, e.g. from gan_lab.metrics.reference_cache,
    or ``add_real`` from images) and kept across ``compute_fake`` calls, with the real k-NN radii
    precision/recall and density/coverage need. FID (torchmetrics) depends on no randomness;
    KID's random subsets are drawn with ``seed`` on an isolated RNG: the same images give the
    same KID, and the caller's RNG stream is left as it was.

    Under DDP each rank extracts the features of its share of the images; torchmetrics gathers
    the ranks' FID/KID states in ``compute`` (in rank order, which KID's subsets depend on:
    contiguous shares, gan_lab.distributed.shard), and the k-NN metrics and the Inception Score
    run on the gathered features on every rank.
    """

    def __init__(
        self,
        extractor: nn.Module,
        kid_subset_size: int = 1000,
        seed: int = 0,
        precision_recall_k: int = 3,
        density_coverage_k: int = 5,
        is_splits: int = 10,
    ) -> None:
        self.extractor = extractor.eval()
        # Both torchmetrics metrics would run the extractor on every batch; they get the features
        # instead, so each image goes through the extractor once (2x faster evaluation).
        given = _GivenFeatures(extractor.num_features)
        self.fid = FrechetInceptionDistance(feature=given, reset_real_features=False)
        self.kid = KernelInceptionDistance(
            feature=given, reset_real_features=False, subset_size=kid_subset_size
        )
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.precision_recall_k = precision_recall_k
        self.density_coverage_k = density_coverage_k
        self.is_splits = is_splits
        self.real_features: Tensor | None = None
        self._real_radii: dict[int, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.fid.device

    def to(self, device: torch.device) -> FeatureDistance:
        self.extractor = self.extractor.to(device)
        self.fid, self.kid = self.fid.to(device), self.kid.to(device)
        return self

    @torch.inference_mode()
    def extract(self, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor | None]:
        """Features (float32) and logits (None without a head) of ``images``, in batches."""
        features, logits = [], []
        for batch in images.split(batch_size):
            batch_features, batch_logits = features_and_logits(
                self.extractor, batch.to(self.device)
            )
            features.append(batch_features.float())
            if batch_logits is not None:
                logits.append(batch_logits.float())
        return torch.cat(features), torch.cat(logits) if logits else None

    @torch.inference_mode()
    def add_real(self, images: Tensor, batch_size: int = 500) -> None:
        """Extract and set the real features of ``images`` (this rank's share of them)."""
        self.set_real_features(gather_shards(self.extract(images, batch_size)[0]))

    @torch.inference_mode()
    def set_real_features(self, features: Tensor) -> None:
        """The features of all real images (every rank passes all of them)."""
        features = features.to(self.device, torch.float32)
        self.real_features = features
        own = features[shard(len(features))]
        self.fid.update(own, real=True)
        self.kid.update(own, real=True)
        ks = (self.precision_recall_k, self.density_coverage_k)
        self._real_radii = knn_radii(features, ks)

    @property
    def num_real(self) -> int:
        return 0 if self.real_features is None else len(self.real_features)

    @torch.inference_mode()
    def compute_fake(self, images: Tensor, batch_size: int = 500) -> dict[str, float]:
        """Every metric of ``images`` (this rank's share of them) against the real features:
        ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``, ``density``, ``coverage``, and
        ``is``/``is_std`` when the extractor has logits."""
        if self.real_features is None:
            raise RuntimeError("FeatureDistance: set the real features before compute_fake")
        self.fid.reset()
        self.kid.reset()
        features, logits = self.extract(images, batch_size)
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        every_fake = gather_shards(features)
        self.kid.subset_size = kid_subset_size(self.kid_subset_size, self.num_real, len(every_fake))
        with isolated_rng(self.seed, self.device):
            kid_mean, kid_std = self.kid.compute()
        scores = {"fid": float(self.fid.compute()), "kid": float(kid_mean)}
        scores["kid_std"] = float(kid_std)
        scores |= fidelity_diversity(
            self.real_features,
            every_fake,
            self.precision_recall_k,
            self.density_coverage_k,
            real_radii=self._real_radii,
        )
        if logits is not None:
            logits = gather_shards(logits)
            # As KID's subsets: no more splits than samples (validation refuses that in configs).
            splits = min(self.is_splits, len(logits))
            scores["is"], scores["is_std"] = inception_score(logits, splits)
        return scores


def kid_subset_size(requested: int, num_real: int, num_fake: int) -> int:
    """The KID subset size used: no larger than the smaller sample set."""
    return min(requested, num_real, num_fake)


class _GivenFeatures(nn.Module):
    """Identity "extractor" for torchmetrics: ``update`` receives features already extracted."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features

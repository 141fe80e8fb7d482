"""All metrics of a generator on its data, in one function shared by training and evaluate.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from gan_lab.arguments import Count
from gan_lab.data.base import GANDataModule
from gan_lab.distributed import gather_objects, gather_shards, rank_and_world, shard
from gan_lab.gan_module import GANModule
from gan_lab.metrics.extractor import extractor_protocol
from gan_lab.metrics.fid import FeatureDistance, kid_subset_size
from gan_lab.metrics.protocol import tensor_sha256, with_id
from gan_lab.metrics.reference_cache import ReferenceCache, reference_key
from gan_lab.metrics.theory import gaussian_density, kde_density, plot_theory, theory_report
from gan_lab.metrics.toy import HIGH_QUALITY_STDS, gaussian_1d_metrics, mode_metrics
from gan_lab.nets.packing import pack_size
from gan_lab.rng_state import derived_seed, isolated_rng

log = logging.getLogger(__name__)

# Published protocols: PacGAN scores 2,500 toy samples; FID uses 10k vs 10k.
TOY_SAMPLES = 2500
GAUSSIAN_1D_SAMPLES = 20_000
GRID_POINTS = 2001  # where the 1-D theory compares densities and D with D*


@dataclass
class Evaluator:
    """Computes the metric suite the DataModule declares in ``metrics``: FID/KID on features
    ("features"), mode metrics ("modes", 2-D mixtures), fit + theory diagnostics
    ("gaussian_1d"). Each suite also logs its primary metric as ``val/primary``, the one to
    select checkpoints and sweeps by (lower is better), and records its ``protocol``
    (gan_lab.metrics.protocol): what its numbers depend on, for metrics.json, the ``done``
    record and the loggers. The real features of the "features" suite are cached on disk in
    ``cache_dir`` (gan_lab.metrics.reference_cache), keyed by the protocol's reference part.

    Generated samples come from the module's evaluation noise (the same z at every call) and
    anything random inside the metrics runs on seeded, isolated RNGs: the numbers of one
    generator are reproducible, and evaluating never draws from the training noise stream.

    Under DDP every rank calls this at once and does its contiguous share of the work
    (gan_lab.distributed.shard): it generates its share of the z, and extracts the features of
    its share of the real and generated images; toy samples are gathered, feature statistics
    are gathered by torchmetrics when computed. Every rank gets the numbers one process scoring
    the same z would give (up to the order of float sums).
    """

    # The split real samples come from; validation clamps num_real to its size
    # (gan_lab.validation.fit_eval_to_data).
    real_split: ClassVar[str] = "train"
    # The keys each suite logs, for checks that build nothing (a sweep's optimized_metric,
    # gan_lab.validation.check_optimized_metric); "{name}" stands for extractor_name.
    # tests/test_optuna_study.py holds it to what the suites return. gaussian_1d logs
    # theory/value and theory/d_vs_dstar_max_err only where D estimates D* (see _d_on_grid).
    suite_keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "features": (
            "val/fid_{name}",
            "val/kid_{name}",
            "val/kid_{name}_std",
            "val/precision_{name}",
            "val/recall_{name}",
            "val/density_{name}",
            "val/coverage_{name}",
            "val/is_{name}",
            "val/is_{name}_std",
            "val/primary",
        ),
        "modes": ("toy/modes", "toy/high_quality", "toy/reverse_kl", "val/primary"),
        "gaussian_1d": (
            "toy/mean_error",
            "toy/std_error",
            "toy/wasserstein",
            "theory/jsd",
            "theory/value_d_star",
            "theory/value",
            "theory/d_vs_dstar_max_err",
            "val/primary",
        ),
    }
    # Settings come from the eval group's YAML (gan_lab/conf/eval/*.yaml), their one home.
    # A feature module, or a factory called with the datamodule (returns None: no FID).
    extractor: nn.Module | Callable[[GANDataModule], nn.Module | None] | None
    extractor_name: str
    num_real: Count
    num_fake: Count
    batch_size: Count
    kid_subset_size: Count
    precision_recall_k: Count
    density_coverage_k: Count
    is_splits: Count
    cache_dir: str | None  # None: gan_lab.metrics.reference_cache.default_cache_dir()
    plot_dir: str | None = None
    # The protocol of the numbers last computed; None before the first evaluation.
    protocol: dict[str, Any] | None = field(default=None, init=False)
    _distance: FeatureDistance | None = field(default=None, init=False, repr=False)

    @classmethod
    def logged_keys(cls, suite: str, extractor_name: str) -> frozenset[str]:
        """The metric keys ``suite`` may log with this extractor name (none for an unknown
        suite, which validation refuses)."""
        return frozenset(key.format(name=extractor_name) for key in cls.suite_keys.get(suite, ()))

    def __call__(
        self, module: GANModule, datamodule: GANDataModule, iteration: int
    ) -> dict[str, float]:
        with isolated_rng(derived_seed(module.sample_seed, "evaluation"), module.fixed_z.device):
            return self.metrics(module, datamodule, iteration)

    def metrics(
        self, module: GANModule, datamodule: GANDataModule, iteration: int
    ) -> dict[str, float]:
        """The suite the datamodule declares in its ``metrics`` attribute."""
        suites = {
            "features": self.feature_metrics,
            "modes": self.mode_metrics,
            "gaussian_1d": self.gaussian_1d,
        }
        if datamodule.metrics not in suites:
            raise ValueError(
                f"{type(datamodule).__name__}.metrics = {datamodule.metrics!r}: declare one of "
                f"{', '.join(suites)} (gan_lab/data/base.py) or train with eval=none"
            )
        return suites[datamodule.metrics](module, datamodule, iteration)

    def mode_metrics(
        self, module: GANModule, datamodule: GANDataModule, iteration: int
    ) -> dict[str, float]:
        """PacGAN's mode metrics on ``TOY_SAMPLES`` samples; primary: reverse KL."""
        samples = gather_shards(_generate_share(module, TOY_SAMPLES))
        metrics = mode_metrics(samples, datamodule.modes, datamodule.std)
        self.protocol = with_id(
            {
                "suite": "modes",
                "dataset": _dataset_name(datamodule),
                "num_fake": TOY_SAMPLES,
                "high_quality_within_std": HIGH_QUALITY_STDS,
            }
        )
        return {**metrics, "val/primary": metrics["toy/reverse_kl"]}

    def feature_metrics(
        self, module: GANModule, datamodule: GANDataModule, iteration: int
    ) -> dict[str, float]:
        """FID and KID on the extractor's features; primary: FID."""
        if self.extractor is not None and not isinstance(self.extractor, nn.Module):
            self.extractor = self.extractor(datamodule)
            if self.extractor is None:
                log.warning(
                    "no %s features for %s: FID/KID skipped (try eval=inception)",
                    self.extractor_name,
                    type(datamodule).__name__,
                )
        if self.extractor is None:
            return {}
        if self._distance is None:  # the real side once per run (or from the cache)
            self._distance = self._real_side(module, datamodule)
        fake = _generate_share(module, self.num_fake, self.batch_size)
        scores = self._distance.compute_fake(fake, self.batch_size)
        name = self.extractor_name
        # The spread of a metric keeps the metric's key with "_std" after the extractor name.
        keys = {"kid_std": f"kid_{name}_std", "is_std": f"is_{name}_std"}
        metrics = {f"val/{keys.get(key, f'{key}_{name}')}": value for key, value in scores.items()}
        return {**metrics, "val/primary": scores["fid"]}

    def _real_side(self, module: GANModule, datamodule: GANDataModule) -> FeatureDistance:
        """The feature metrics with the real features set: read from the cache under the
        protocol's reference part, or extracted (each rank its share) and cached by rank 0."""
        assert isinstance(self.extractor, nn.Module)
        distance = FeatureDistance(
            self.extractor,
            self.kid_subset_size,
            derived_seed(module.sample_seed, "kid"),
            self.precision_recall_k,
            self.density_coverage_k,
            self.is_splits,
        ).to(module.fixed_z.device)
        real = datamodule.real_samples(self.num_real, self.real_split)
        reference = {
            "extractor": extractor_protocol(self.extractor),
            "reference": {
                "dataset": _dataset_name(datamodule),
                "image_shape": list(real.shape[1:]),
                "split": self.real_split,
                "size": len(real),
                "fingerprint": tensor_sha256(real),
            },
        }
        self.protocol = with_id(
            {
                "suite": "features",
                **reference,
                "num_fake": self.num_fake,
                "kid_subset_size": kid_subset_size(self.kid_subset_size, len(real), self.num_fake),
                "precision_recall_k": self.precision_recall_k,
                "density_coverage_k": self.density_coverage_k,
                "is_splits": self.is_splits,
            }
        )
        cache = ReferenceCache.at(self.cache_dir)
        key = reference_key(reference)
        features = cache.load(key)
        # Under DDP every rank must take the same branch (extracting gathers across ranks): a
        # file that one rank cannot see (a node-local cache dir) means every rank extracts.
        if not all(gather_objects(features is not None)):
            features = None
        if features is not None:
            log.info("real features: %d from the cache %s", len(features), cache.path(key))
        else:
            start = time.perf_counter()
            own = distance.extract(real[shard(len(real))], self.batch_size)[0]
            features = gather_shards(own)
            seconds = time.perf_counter() - start
            saved = cache.save(key, features, self.protocol) if rank_and_world()[0] == 0 else None
            log.info(
                "real features: %d extracted in %.1f s%s",
                len(features),
                seconds,
                f", cached in {saved}" if saved else "",
            )
        distance.set_real_features(features)
        return distance

    def gaussian_1d(
        self, module: GANModule, datamodule: GANDataModule, iteration: int
    ) -> dict[str, float]:
        """Fit of N(mean, std^2) and the paper's theory on a 1-D grid; primary: W1."""
        samples = gather_shards(_generate_share(module, GAUSSIAN_1D_SAMPLES))
        samples = samples.flatten().double().cpu()
        metrics = gaussian_1d_metrics(samples, datamodule.mean, datamodule.std)
        lo = min(datamodule.mean - 5 * datamodule.std, samples.quantile(0.001).item())
        hi = max(datamodule.mean + 5 * datamodule.std, samples.quantile(0.999).item())
        x = torch.linspace(lo, hi, GRID_POINTS, dtype=torch.float64)
        d_estimate = self._d_on_grid(module, x)
        report = theory_report(
            gaussian_density(datamodule.mean, datamodule.std),
            kde_density(samples),
            x,
            None if d_estimate is None else lambda _: d_estimate.double().cpu(),
        )
        if self.plot_dir is not None and rank_and_world()[0] == 0:
            plot_theory(
                report,
                Path(self.plot_dir) / f"iter_{iteration:07d}.png",
                f"iteration {iteration}: JSD={report.jsd:.3f}",
            )
        theory = {"theory/jsd": report.jsd, "theory/value_d_star": report.value_d_star}
        self.protocol = with_id(
            {
                "suite": "gaussian_1d",
                "dataset": _dataset_name(datamodule),
                "num_fake": GAUSSIAN_1D_SAMPLES,
                "grid_points": GRID_POINTS,
            }
        )
        if report.value_d is not None:
            theory["theory/value"] = report.value_d
            theory["theory/d_vs_dstar_max_err"] = report.d_vs_dstar_max_err
        return {**metrics, **theory, "val/primary": metrics["toy/wasserstein"]}

    @staticmethod
    def _d_on_grid(module: GANModule, x: torch.Tensor) -> torch.Tensor | None:
        """D's estimate of D*(x) on the 1-D grid ``x``; None where D estimates no such thing:
        hinge and critic scores (no probability) and a packing D (it judges m samples at once,
        so a single x has no D(x)). Then only p_g's side of the theory is reported."""
        discriminator = module.discriminator
        if pack_size(discriminator) > 1:
            return None
        was_training = discriminator.training
        discriminator.eval()
        with torch.inference_mode():
            param = next(discriminator.parameters())
            outputs = discriminator(x[:, None].to(param))
        discriminator.train(was_training)
        return module.loss.d_star_estimate(outputs)


def _dataset_name(datamodule: GANDataModule) -> str:
    return type(datamodule).__name__


def _generate_share(module: GANModule, n: int, batch_size: int = 1024) -> torch.Tensor:
    """This rank's contiguous share of ``module.generate(n)``: the same z, split over ranks."""
    z = module.sample_noise(n)[shard(n)]
    return module.generate(z=z, batch_size=batch_size)

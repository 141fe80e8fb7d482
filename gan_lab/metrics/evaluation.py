"""All metrics of a generator on its data, in one function shared by training and evaluate.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from gan_lab.arguments import Count
from gan_lab.data.base import GANDataModule
from gan_lab.distributed import gather_shards, rank_and_world, shard
from gan_lab.gan_module import GANModule
from gan_lab.metrics.fid import FeatureDistance
from gan_lab.metrics.theory import gaussian_density, kde_density, plot_theory, theory_report
from gan_lab.metrics.toy import gaussian_1d_metrics, mode_metrics
from gan_lab.nets.packing import pack_size
from gan_lab.rng_state import derived_seed, isolated_rng

log = logging.getLogger(__name__)

# Published protocols: PacGAN scores 2,500 toy samples; FID uses 10k vs 10k.
TOY_SAMPLES = 2500


@dataclass
class Evaluator:
    """Computes the metric suite the DataModule declares in ``metrics``: FID/KID on features
    ("features"), mode metrics ("modes", 2-D mixtures), fit + theory diagnostics
    ("gaussian_1d"). Each suite also logs its primary metric as ``val/primary``, the one to
    select checkpoints and sweeps by (lower is better).

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
        "features": ("val/fid_{name}", "val/kid_{name}", "val/primary"),
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
    plot_dir: str | None = None
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
        device = module.fixed_z.device
        if self._distance is None:  # real statistics once per run
            self._distance = FeatureDistance(
                self.extractor, self.kid_subset_size, derived_seed(module.sample_seed, "kid")
            ).to(device)
            real = datamodule.real_samples(self.num_real, self.real_split)
            self._distance.add_real(real[shard(len(real))], self.batch_size, total=len(real))
        fake = _generate_share(module, self.num_fake, self.batch_size)
        scores = self._distance.compute_fake(fake, self.batch_size, total=self.num_fake)
        name = self.extractor_name
        return {
            f"val/fid_{name}": scores["fid"],
            f"val/kid_{name}": scores["kid"],
            "val/primary": scores["fid"],
        }

    def gaussian_1d(
        self, module: GANModule, datamodule: GANDataModule, iteration: int
    ) -> dict[str, float]:
        """Fit of N(mean, std^2) and the paper's theory on a 1-D grid; primary: W1."""
        samples = gather_shards(_generate_share(module, 20_000)).flatten().double().cpu()
        metrics = gaussian_1d_metrics(samples, datamodule.mean, datamodule.std)
        lo = min(datamodule.mean - 5 * datamodule.std, samples.quantile(0.001).item())
        hi = max(datamodule.mean + 5 * datamodule.std, samples.quantile(0.999).item())
        x = torch.linspace(lo, hi, 2001, dtype=torch.float64)
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


def _generate_share(module: GANModule, n: int, batch_size: int = 1024) -> torch.Tensor:
    """This rank's contiguous share of ``module.generate(n)``: the same z, split over ranks."""
    z = module.sample_noise(n)[shard(n)]
    return module.generate(z=z, batch_size=batch_size)

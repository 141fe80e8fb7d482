"""``GANDataModule``: the data interface every GAN part relies on (see docs/design.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import lightning as L
from torch import Tensor

from gan_lab.arguments import Count

SPLITS = ("train", "val", "test")

# What ``GANDataModule.metrics`` may declare; see its docstring for what each suite needs.
METRIC_SUITES = ("features", "modes", "gaussian_1d")


def check_split(split: str) -> str:
    """``split`` itself if it is one of ``SPLITS``, else ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of 'train', 'val', 'test'")
    return split


def batch_shortfall(size: int, batch_size: int, batches_per_step: int) -> str | None:
    """The rule one iteration's k real minibatches break on a set of ``size`` samples, or None
    when they fit."""
    per_iteration = batch_size * batches_per_step
    if size >= per_iteration:
        return None
    return (
        f"train.k_d_steps * data.batch_size = {batches_per_step} * {batch_size} = "
        f"{per_iteration} is more than the {size} training samples; lower data.batch_size or "
        "train.k_d_steps"
    )


class GANDataModule(L.LightningDataModule):
    """Base class: an infinite train stream of ``(k, B, *sample_shape)`` batches + real samples.

    Subclasses set ``kind`` and ``sample_shape`` in ``__init__`` and implement
    ``train_dataloader`` and ``real_samples``. ``batches_per_step`` is set by the trainer to
    ``k_d_steps`` before fitting; ``train_dataloader`` reads it when Lightning calls it.
    ``batch_size`` is per rank: under DDP each rank draws its own stream (``stream_seed``) and
    an update's global batch is ``world_size * batch_size``.

    Subclasses declare what they are, so other parts dispatch on attributes, not class names:

    - ``metrics``: the metric suite the evaluator computes, one of ``METRIC_SUITES``:
      ``"features"`` (FID/KID on a feature extractor; image sets), ``"modes"`` (2-D mixtures;
      the module has ``modes`` (M, D) and ``std``) or ``"gaussian_1d"`` (the module has ``mean``
      and ``std``); ``""`` declares none.
    - ``classifier``: the name of the committed classifier whose features give FID
      (``gan_lab/metrics/weights/<name>_classifier.pt``), or None when the set has none.
    """

    kind: str = ""
    metrics: ClassVar[str] = ""
    classifier: ClassVar[str | None] = None

    def __init__(
        self,
        batch_size: Count,
        seed: int = 0,
        batches_per_step: Count = 1,
        in_memory: bool = True,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_step = batches_per_step
        self.in_memory = in_memory
        self.sample_shape: tuple[int, ...] = ()

    def train_dataloader(self) -> Iterable[Tensor]:
        raise NotImplementedError

    def real_samples(self, n: int, split: str = "train") -> Tensor:
        """``n`` real samples ``(n, *sample_shape)``, deterministic given ``seed`` and split."""
        raise NotImplementedError

    def num_samples(self, split: str = "train") -> int | None:
        """Number of samples in ``split``; None for sampled data (an infinite stream)."""
        return None

    def stream_seed(self) -> int:
        """Seed of the training stream: under DDP each rank draws its own minibatches."""
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        return self.seed + 7919 * rank

    def _split_seed(self, split: str) -> int:
        # Distinct but reproducible streams per split, independent of the training stream.
        return self.seed * 1000 + 1 + SPLITS.index(check_split(split))

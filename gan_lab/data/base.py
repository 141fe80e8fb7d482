"""``GANDataModule``: the data interface every GAN part relies on (see docs/design.md)."""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
from torch import Tensor

# Lightning's prefetching fetcher pulls one batch ahead of training when the loader has no
# length; streams rewind by this many batches in ``state_dict`` so a resumed run sees exactly the
# batches it would have seen. An int ``limit_train_batches`` (as gan_lab.train sets) gives the
# loader a length, and then Lightning does not prefetch (``_PrefetchDataFetcher.__iter__``).
LIGHTNING_PREFETCH = 1

SPLITS = ("train", "val", "test")


class GANDataModule(L.LightningDataModule):
    """Base class: an infinite train stream of ``(k, B, *sample_shape)`` batches + real samples.

    Subclasses set ``kind`` and ``sample_shape`` in ``__init__`` and implement
    ``train_dataloader`` and ``real_samples``. ``batches_per_step`` is set by the trainer to
    ``k_d_steps`` before fitting; ``train_dataloader`` reads it when Lightning calls it.
    """

    kind: str = ""

    def __init__(
        self,
        batch_size: int,
        seed: int = 0,
        batches_per_step: int = 1,
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

    def prefetch_lag(self) -> int:
        """Batches Lightning fetches ahead of the one being trained on (see LIGHTNING_PREFETCH)."""
        trainer = self.trainer
        if trainer is not None and isinstance(trainer.limit_train_batches, int):
            return 0
        return LIGHTNING_PREFETCH

    def real_samples(self, n: int, split: str = "train") -> Tensor:
        """``n`` real samples ``(n, *sample_shape)``, deterministic given ``seed`` and split."""
        raise NotImplementedError

    def stream_seed(self) -> int:
        """Seed of the training stream: under DDP each rank draws its own minibatches."""
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        return self.seed + 7919 * rank

    def _split_seed(self, split: str) -> int:
        # Distinct but reproducible streams per split, independent of the training stream.
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.seed * 1000 + 1 + SPLITS.index(split)

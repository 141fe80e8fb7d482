"""Infinite batch streams yielding ``(batches_per_step, batch_size, *sample_shape)`` tensors.

``TensorBatchStream`` and ``SamplerStream`` are stateful: Lightning 2.x stores the
``state_dict()`` of every train iterable that has one in the checkpoint (``FitLoop`` via
``CombinedLoader._state_dicts``) and calls ``load_state_dict()`` before ``iter()`` on resume, so
the data order continues exactly. ``state_dict()`` is the state after the last yield, with no
rewind for a prefetched batch: gan_lab's trainer sets an int ``limit_train_batches`` (the
iteration budget), and then Lightning's fetcher does not prefetch
(``_PrefetchDataFetcher.__iter__``).

``LoaderStream`` (worker-backed, for sets that do not fit in memory) has no state: resuming it
restarts its shuffling, so exact resume is only guaranteed on the in-memory and sampled paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gan_lab.data.base import batch_shortfall


def to_unit_range(x: Tensor) -> Tensor:
    """Map uint8 pixels to float32 in [-1, 1]; float tensors are assumed already scaled."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


def to_pixels(x: Tensor) -> Tensor:
    """The inverse of ``to_unit_range`` for generated images: [-1, 1] -> uint8 (clamped)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class _Stream:
    """What every stream shares: each yield is ``batches_per_step`` minibatches of ``batch_size``
    samples, ``(k, B, *sample_shape)``."""

    def __init__(self, batch_size: int, batches_per_step: int) -> None:
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step

    @property
    def per_yield(self) -> int:
        """Samples drawn per yield: ``batches_per_step * batch_size``."""
        return self.batches_per_step * self.batch_size

    def _check_fits(self, size: int) -> None:
        """``ValueError`` unless a set of ``size`` samples fills one yield."""
        shortfall = batch_shortfall(size, self.batch_size, self.batches_per_step)
        if shortfall is not None:
            raise ValueError(shortfall)

    def _steps(self, x: Tensor) -> Tensor:
        """``(k * B, *shape)`` -> ``(k, B, *shape)``: the k minibatches of one iteration."""
        return x.view(self.batches_per_step, self.batch_size, *x.shape[1:])


class _StatefulStream(_Stream):
    """A stream drawing from its own seeded ``torch.Generator``, checkpointed by Lightning.

    Subclasses implement ``_state()`` and ``_restore(state)``. Kept apart from ``_Stream`` so
    ``LoaderStream`` has no ``state_dict`` for Lightning to store and restore.
    """

    def __init__(self, batch_size: int, batches_per_step: int, seed: int) -> None:
        super().__init__(batch_size, batches_per_step)
        self.generator = torch.Generator().manual_seed(seed)

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The stream's state after its last yield."""
        return self._state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next yield is the one that followed it."""
        self._restore(state)


class TensorBatchStream(_StatefulStream):
    """Shuffled minibatches from one in-memory tensor, epoch after epoch, forever.

    Each epoch draws a fresh permutation from a seeded ``torch.Generator`` and drops the tail
    that does not fill ``batches_per_step * batch_size``, so the k minibatches of one yield never
    share a sample. ``transform`` runs per yield (e.g. uint8 -> [-1, 1]) so large image sets stay
    uint8 in memory.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        batches_per_step: int = 1,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] = to_unit_range,
    ) -> None:
        super().__init__(batch_size, batches_per_step, seed)
        self._check_fits(len(data))
        self.data = data
        self.transform = transform
        self.yields_per_epoch = len(data) // self.per_yield
        self._start_epoch(epoch=0)

    def _start_epoch(self, epoch: int) -> None:
        # The permutation is a pure function of the generator state at epoch start, so that
        # state plus (epoch, position) is the whole stream state.
        self.epoch = epoch
        self.position = 0
        self._epoch_start_state = self.generator.get_state()
        self._perm = torch.randperm(len(self.data), generator=self.generator)

    def _state(self) -> dict[str, Any]:
        """Generator state at the start of the epoch, epoch number and position in it."""
        return {
            "generator": self._epoch_start_state,
            "epoch": self.epoch,
            "position": self.position,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._start_epoch(state["epoch"])
        self.position = state["position"]

    def __iter__(self) -> Iterator[Tensor]:
        # Continues from the current state (not from scratch) so repeated ``iter()`` calls by
        # Lightning at epoch boundaries or after ``load_state_dict`` keep the order.
        while True:
            if self.position >= self.yields_per_epoch:
                self._start_epoch(self.epoch + 1)
            start = self.position * self.per_yield
            idx = self._perm[start : start + self.per_yield].to(self.data.device)
            self.position += 1
            yield self._steps(self.transform(self.data[idx]))


class SamplerStream(_StatefulStream):
    """Fresh samples from ``sample_fn(n, generator)`` on every yield, forever (toy data)."""

    def __init__(
        self,
        sample_fn: Callable[[int, torch.Generator], Tensor],
        batch_size: int,
        batches_per_step: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, batches_per_step, seed)
        self.sample_fn = sample_fn
        self.count = 0

    def _state(self) -> dict[str, Any]:
        """Generator state and the number of yields so far."""
        return {"generator": self.generator.get_state(), "count": self.count}

    def _restore(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.count = state["count"]

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            x = self.sample_fn(self.per_yield, self.generator)
            self.count += 1
            yield self._steps(x)


class LoaderStream(_Stream):
    """Worker-backed stream over a ``Dataset`` for sets too large to hold in memory.

    One ``DataLoader`` with batch size ``batches_per_step * batch_size``, ``drop_last`` and
    seeded shuffling, cycled forever and reshaped to ``(k, B, ...)``. Not stateful: a resumed run
    reshuffles from the seed, so exact resume holds only for the in-memory path.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        batches_per_step: int = 1,
        seed: int = 0,
        num_workers: int = 0,
        transform: Callable[[Tensor], Tensor] = to_unit_range,
    ) -> None:
        super().__init__(batch_size, batches_per_step)
        self._check_fits(len(dataset))  # type: ignore[arg-type]
        self.transform = transform
        self.loader = DataLoader(
            dataset,
            batch_size=self.per_yield,
            shuffle=True,
            drop_last=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            for item in self.loader:
                # Datasets such as ImageFolder yield (image, label); the GAN needs images only.
                x = item[0] if isinstance(item, list | tuple) else item
                yield self._steps(self.transform(x))

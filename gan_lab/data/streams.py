"""Infinite batch streams yielding ``(batches_per_step, batch_size, *sample_shape)`` tensors.

``TensorBatchStream`` and ``SamplerStream`` are stateful: Lightning 2.x stores the
``state_dict()`` of every train iterable that has one in the checkpoint (``FitLoop`` via
``CombinedLoader._state_dicts``) and calls ``load_state_dict()`` before ``iter()`` on resume, so
the data order continues exactly. ``LoaderStream`` (worker-backed, for sets that do not fit in
memory) has no state: resuming it restarts its shuffling, so exact resume is only guaranteed on
the in-memory and sampled paths.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def to_unit_range(x: Tensor) -> Tensor:
    """Map uint8 pixels to float32 in [-1, 1]; float tensors are assumed already scaled."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


class _LaggedState:
    """Remembers the stream state ``lag`` batches back.

    Lightning's ``_PrefetchDataFetcher`` pulls one batch ahead of the one being trained on, so
    a checkpoint written after batch n sees a stream that has produced n + 1 batches. Reporting
    the state from ``lag`` batches back makes the resumed run re-yield the prefetched batch
    instead of skipping it.
    """

    def __init__(self, lag: int) -> None:
        self.snapshots: deque[dict[str, Any]] = deque(maxlen=lag + 1)

    def push(self, state: dict[str, Any]) -> None:
        self.snapshots.append(state)

    def oldest(self) -> dict[str, Any]:
        return self.snapshots[0]


class TensorBatchStream:
    """Shuffled minibatches from one in-memory tensor, epoch after epoch, forever.

    Each epoch draws a fresh permutation from a seeded ``torch.Generator`` and drops the tail
    that does not fill ``batches_per_step * batch_size``, so the k minibatches of one yield never
    share a sample. ``transform`` runs per yield (e.g. uint8 -> [-1, 1]) so large image sets stay
    uint8 in memory. ``lag`` is the number of prefetched batches to rewind in ``state_dict``.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        batches_per_step: int = 1,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] = to_unit_range,
        lag: int = 0,
    ) -> None:
        per_yield = batch_size * batches_per_step
        if len(data) < per_yield:
            raise ValueError(
                f"dataset has {len(data)} samples, fewer than batches_per_step * batch_size = "
                f"{batches_per_step} * {batch_size} = {per_yield}; lower batch_size or k_d_steps"
            )
        self.data = data
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)
        self.yields_per_epoch = len(data) // per_yield
        self._lagged = _LaggedState(lag)
        self._start_epoch(epoch=0)
        self._lagged.push(self._state())

    def _start_epoch(self, epoch: int) -> None:
        # The permutation is a pure function of the generator state at epoch start, so that
        # state plus (epoch, position) is the whole stream state.
        self.epoch = epoch
        self.position = 0
        self._epoch_start_state = self.generator.get_state()
        self._perm = torch.randperm(len(self.data), generator=self.generator)

    def _state(self) -> dict[str, Any]:
        return {
            "generator": self._epoch_start_state,
            "epoch": self.epoch,
            "position": self.position,
        }

    def __iter__(self) -> Iterator[Tensor]:
        # Continues from the current state (not from scratch) so repeated ``iter()`` calls by
        # Lightning at epoch boundaries or after ``load_state_dict`` keep the order.
        while True:
            if self.position >= self.yields_per_epoch:
                self._start_epoch(self.epoch + 1)
            per_yield = self.batch_size * self.batches_per_step
            start = self.position * per_yield
            idx = self._perm[start : start + per_yield].to(self.data.device)
            self.position += 1
            self._lagged.push(self._state())
            batch = self.transform(self.data[idx])
            yield batch.view(self.batches_per_step, self.batch_size, *self.data.shape[1:])

    def state_dict(self) -> dict[str, Any]:
        """Generator state at the start of the epoch, epoch number and position in it."""
        return dict(self._lagged.oldest())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next yield is the one that followed it."""
        self.generator.set_state(state["generator"])
        self._start_epoch(state["epoch"])
        self.position = state["position"]
        self._lagged.snapshots.clear()
        self._lagged.push(self._state())


class SamplerStream:
    """Fresh samples from ``sample_fn(n, generator)`` on every yield, forever (toy data)."""

    def __init__(
        self,
        sample_fn: Callable[[int, torch.Generator], Tensor],
        batch_size: int,
        batches_per_step: int = 1,
        seed: int = 0,
        lag: int = 0,
    ) -> None:
        self.sample_fn = sample_fn
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.generator = torch.Generator().manual_seed(seed)
        self.count = 0
        self._lagged = _LaggedState(lag)
        self._lagged.push(self._state())

    def _state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "count": self.count}

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            n = self.batches_per_step * self.batch_size
            x = self.sample_fn(n, self.generator)
            self.count += 1
            self._lagged.push(self._state())
            yield x.view(self.batches_per_step, self.batch_size, *x.shape[1:])

    def state_dict(self) -> dict[str, Any]:
        """Generator state and the number of yields so far."""
        return dict(self._lagged.oldest())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next yield is the one that followed it."""
        self.generator.set_state(state["generator"])
        self.count = state["count"]
        self._lagged.snapshots.clear()
        self._lagged.push(self._state())


class LoaderStream:
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
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.transform = transform
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size * batches_per_step,
            shuffle=True,
            drop_last=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"dataset has {len(dataset)} samples, fewer than batches_per_step * batch_size = "
                f"{batch_size * batches_per_step}; lower batch_size or k_d_steps"
            )

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            for item in self.loader:
                # Datasets such as ImageFolder yield (image, label); the GAN needs images only.
                x = item[0] if isinstance(item, list | tuple) else item
                x = self.transform(x)
                yield x.view(self.batches_per_step, self.batch_size, *x.shape[1:])

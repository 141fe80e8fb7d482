"""Infinite batch streams yielding ``(batches_per_step, batch_size, *sample_shape)`` tensors.

Every stream is stateful: Lightning 2.x stores the ``state_dict()`` of every train iterable that
has one in the checkpoint (``FitLoop`` via ``CombinedLoader._state_dicts``) and calls
``load_state_dict()`` before ``iter()`` on resume, so the data order continues exactly.
``state_dict()`` is the state after the last yield, with no rewind for a prefetched batch:
gan_lab's trainer sets an int ``limit_train_batches`` (the iteration budget), and then Lightning's
fetcher does not prefetch (``_PrefetchDataFetcher.__iter__``). ``LoaderStream``'s own workers do
read ahead; its state counts the yields handed out, not the batches its workers loaded.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gan_lab.data.base import batch_shortfall
from gan_lab.distributed import gather_objects, is_distributed, own_entry
from gan_lab.errors import UserError


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

    Subclasses implement ``_state()`` and ``_restore(state)``.
    """

    def __init__(self, batch_size: int, batches_per_step: int, seed: int) -> None:
        super().__init__(batch_size, batches_per_step)
        self.generator = torch.Generator().manual_seed(seed)

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The stream's state after its last yield; under DDP, every rank's (``{"ranks": [...]}``).

        Lightning calls this on every rank as it saves a checkpoint, and writes rank 0's dict:
        each rank draws its own stream (``stream_seed``), so rank 0's carries them all.
        """
        if not is_distributed():
            return self._state()
        return {"ranks": gather_objects(self._state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next yield is the one that followed it.

        Each rank takes its own state. A rank the checkpoint has none for (it was written by
        fewer ranks, or by one process, whose stream was rank 0's) keeps its fresh stream.
        """
        own = own_entry(state.get("ranks"), state)
        if own is not None:
            self._restore(own)


class _EpochOrder:
    """The sample indices of each yield: a fresh permutation of ``size`` per epoch from
    ``generator``, ``per_yield`` at a time, dropping the tail that does not fill a yield (so the
    k minibatches of one yield never share a sample)."""

    def __init__(self, size: int, per_yield: int, generator: torch.Generator) -> None:
        self.size = size
        self.per_yield = per_yield
        self.yields_per_epoch = size // per_yield
        self.generator = generator
        self._start_epoch(epoch=0)

    def _start_epoch(self, epoch: int) -> None:
        # The permutation is a pure function of the generator state at epoch start, so that
        # state plus (epoch, position) is the whole state.
        self.epoch = epoch
        self.position = 0
        self._epoch_start_state = self.generator.get_state()
        self._perm = torch.randperm(self.size, generator=self.generator)

    def state_dict(self) -> dict[str, Any]:
        """Generator state at the start of the epoch, epoch number and position in it."""
        return {
            "generator": self._epoch_start_state,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._start_epoch(state["epoch"])
        self.position = state["position"]

    def copy(self) -> _EpochOrder:
        """An order at the same point with a generator of its own: taking from it leaves this
        one where it is."""
        twin = _EpochOrder(self.size, self.per_yield, torch.Generator())
        twin.load_state_dict(self.state_dict())
        return twin

    def take(self) -> Tensor:
        """The next yield's ``per_yield`` indices, starting a new epoch when this one is used up."""
        if self.position >= self.yields_per_epoch:
            self._start_epoch(self.epoch + 1)
        start = self.position * self.per_yield
        self.position += 1
        return self._perm[start : start + self.per_yield]


class TensorBatchStream(_StatefulStream):
    """Shuffled minibatches from one in-memory tensor, epoch after epoch, forever.

    Each epoch draws a fresh permutation from a seeded ``torch.Generator`` (``_EpochOrder``).
    ``transform`` runs per yield (e.g. uint8 -> [-1, 1]) so large image sets stay uint8 in
    memory.
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
        self.order = _EpochOrder(len(data), self.per_yield, self.generator)

    def _state(self) -> dict[str, Any]:
        return self.order.state_dict()

    def _restore(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)

    def __iter__(self) -> Iterator[Tensor]:
        # Continues from the current state (not from scratch) so repeated ``iter()`` calls by
        # Lightning at epoch boundaries or after ``load_state_dict`` keep the order.
        while True:
            idx = self.order.take().to(self.data.device)
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


class _IndexBatches:
    """A ``DataLoader`` batch sampler: ``order``'s index batches, forever."""

    def __init__(self, order: _EpochOrder) -> None:
        self.order = order

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.order.take().tolist()


class LoaderStream(_StatefulStream):
    """Worker-backed stream over a ``Dataset`` for sets too large to hold in memory.

    The order of ``TensorBatchStream`` (a seeded permutation per epoch, tail dropped) is fed to a
    ``DataLoader`` as its batch sampler, and its workers load and collate the samples. Workers
    read ``prefetch_factor * num_workers`` yields ahead, so the sampler takes from a copy of the
    order while the stream's own order advances only with the yields handed out: the state
    after a yield is the same with or without workers, and each ``iter()`` starts a loader at
    that point (after ``load_state_dict``, at the restored one). Random transforms inside the
    dataset would draw from worker RNGs, which are not part of the state.
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
        super().__init__(batch_size, batches_per_step, seed)
        size = len(dataset)  # type: ignore[arg-type]
        self._check_fits(size)
        self.dataset = dataset
        self.num_workers = num_workers
        self.transform = transform
        self.order = _EpochOrder(size, self.per_yield, self.generator)
        # DataLoader draws its workers' base seed from this, not from the global RNG that
        # training draws from (and the checkpoint restores).
        self._worker_seeds = torch.Generator().manual_seed(seed)

    def _state(self) -> dict[str, Any]:
        return self.order.state_dict()

    def _restore(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)

    def __iter__(self) -> Iterator[Tensor]:
        # A loader per iter(), its workers living as long as this generator: Lightning drops it
        # when fit ends or fails, and the workers stop at once, read-ahead and all. The sampler
        # never ends, so persistent workers would save no restarts; they would belong to a
        # DataLoader kept alive by Lightning's reference cycles until the garbage collector
        # stops them, waiting out a 5 s join timeout per worker (seen after a failed fit).
        loader = DataLoader(
            self.dataset,
            batch_sampler=_IndexBatches(self.order.copy()),
            num_workers=self.num_workers,
            generator=self._worker_seeds,
            worker_init_fn=functools.partial(_ignore_stop_signals, exiting=_ExitFlag.event()),
        )
        try:
            for item in loader:
                self.order.take()  # one yield consumed; the sampler's copy is ahead by the prefetch
                # Datasets such as ImageFolder yield (image, label); the GAN needs images only.
                x = item[0] if isinstance(item, list | tuple) else item
                yield self._steps(self.transform(x))
        except UserError as error:  # a bad file, named by the dataset inside a worker
            raise type(error)(_worker_message(error)) from None


def _worker_message(error: UserError) -> str:
    """The message a dataset raised inside a DataLoader worker: torch re-raises it with the
    worker's traceback prepended, whose last line is the original ``Class: message``."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    return text.rstrip().splitlines()[-1].partition(": ")[2] or text


class _ExitFlag:
    """Set when this process starts to exit, and read by its DataLoader workers.

    Workers ignore SIGTERM while the main process runs (``_ignore_stop_signals``), but when it
    exits after an error, multiprocessing's exit handler stops them with terminate() (a
    SIGTERM) and waits: a worker still ignoring it would hang the exit for ever. An atexit
    handler registered after multiprocessing's runs before it and sets this flag; a worker
    exits on SIGTERM once it is set.
    """

    _event: Any = None

    @classmethod
    def event(cls) -> Any:
        if cls._event is None:
            cls._event = multiprocessing.get_context().Event()
            atexit.register(cls._event.set)
        return cls._event


def _ignore_stop_signals(worker_id: int, exiting: Any = None) -> None:
    """In each DataLoader worker: leave SIGINT and SIGTERM to the main process.

    A terminal's Ctrl+C and a scheduler's SIGTERM reach every process of the job. A worker
    killed by one makes torch raise "DataLoader worker ... is killed by signal" in the main
    process mid-iteration, before its clean stop can save; ignored here, the main process stops
    at the iteration boundary and shuts its workers down itself (they also exit when it dies).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_sigterm(signum: int, frame: Any) -> None:
        if exiting is not None and exiting.is_set():  # the main process is exiting
            os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)

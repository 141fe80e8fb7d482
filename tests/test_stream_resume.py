"""Exact resume of the worker-backed ``LoaderStream``, alone and through ``gan_lab.train.fit``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_lab.data import Digits, LoaderStream
from tests.helpers import image_folder_overrides, write_image_folder
from tests.test_data import _fit
from tests.test_resume import crash_then_resume

WORKERS = [0, 2]

# --- the stream alone -------------------------------------------------------------------------


def loader_stream(num_workers: int) -> LoaderStream:
    """50 distinct samples, 2 minibatches of 4 per yield: 6 yields per epoch, 2 samples dropped."""
    dataset = torch.utils.data.TensorDataset(torch.arange(50, dtype=torch.float32).unsqueeze(1))
    return LoaderStream(dataset, batch_size=4, batches_per_step=2, seed=7, num_workers=num_workers)


def take(iterator, n: int) -> list[torch.Tensor]:
    return [next(iterator) for _ in range(n)]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if k == "generator" else a[k] == b[k] for k in a)


@pytest.mark.parametrize("num_workers", WORKERS)
@pytest.mark.parametrize("n", [0, 3, 8], ids=lambda n: f"after{n}")
def test_loader_stream_state_round_trip(num_workers: int, n: int) -> None:
    """The yields after a restored state equal those after the saved one, across epochs (the
    8th yield is the 2nd of epoch 2; the 7 after it reach into epoch 3)."""
    stream = loader_stream(num_workers)
    it = iter(stream)
    take(it, n)
    state = stream.state_dict()
    expected = take(it, 7)
    fresh = loader_stream(num_workers)
    fresh.load_state_dict(state)
    assert_same(take(iter(fresh), 7), expected)


@pytest.mark.parametrize("n", [3, 8])
def test_loader_stream_state_ignores_read_ahead(n: int) -> None:
    """Two workers load yields ahead; the yields and the state after them are those of a
    stream without workers, and the state is the one a fresh stream reaches after ``n``."""
    with_workers, without = loader_stream(2), loader_stream(0)
    assert_same(take(iter(with_workers), n), take(iter(without), n))
    assert_same_state(with_workers.state_dict(), without.state_dict())
    assert with_workers.state_dict()["epoch"] == n // 6


@pytest.mark.parametrize("num_workers", WORKERS)
def test_loader_stream_iter_again_continues(num_workers: int) -> None:
    """A second ``iter()`` (Lightning's, after ``load_state_dict`` or at an epoch boundary)
    continues from the yields consumed, not from what the first one's workers read ahead."""
    expected = take(iter(loader_stream(num_workers)), 12)
    stream = loader_stream(num_workers)
    first = iter(stream)
    got = take(first, 4)
    state = stream.state_dict()
    take(first, 3)
    stream.load_state_dict(state)  # back to 4 consumed, on the same stream
    got += take(iter(stream), 3)  # yields 5-7
    got += take(iter(stream), 5)  # a new iter() with no load: yields 8-12
    assert_same(got, expected)


def test_loader_stream_epoch_is_a_permutation() -> None:
    it = iter(loader_stream(0))
    epochs = [torch.cat([b.flatten() for b in take(it, 6)]) for _ in range(2)]
    assert all(len(set(e.tolist())) == 48 and e.max() < 50 for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])


def test_streamed_order_equals_in_memory_order() -> None:
    """Both paths take the same seeded order, so ``in_memory`` changes nothing a run sees."""
    streamed = iter(Digits(batch_size=300, in_memory=False).train_dataloader())
    in_memory = iter(Digits(batch_size=300, in_memory=True).train_dataloader())
    assert_same(take(streamed, 6), take(in_memory, 6))


@pytest.mark.parametrize("num_workers", WORKERS)
def test_lightning_resume_continues_loader_order(tmp_path: Path, num_workers: int) -> None:
    """Through ``Trainer.fit``: 4 yields per epoch, so the checkpoint at 3 resumes into epoch 2."""

    def make() -> Digits:
        return Digits(batch_size=300, in_memory=False, num_workers=num_workers)

    full = _fit(make(), tmp_path / "a")
    ckpt = next((tmp_path / "a").glob("*step=3.ckpt"))
    resumed = _fit(make(), tmp_path / "b", ckpt_path=str(ckpt))
    assert len(full.seen) == 6 and len(resumed.seen) == 3
    assert_same(full.seen[3:], resumed.seen)


# --- through Lightning ------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", WORKERS)
def test_image_folder_stream_crash_then_resume(make_config, monkeypatch, tmp_path, num_workers):
    """A streamed image folder resumed after a crash ends with the weights of a straight run.

    20 images, k=2 minibatches of 4: 2 iterations per epoch, so 6 iterations cross two epoch
    boundaries and the iteration-3 checkpoint lands mid-epoch.
    """
    root = write_image_folder(tmp_path / "images", n=20)
    common = image_folder_overrides(
        root, num_workers, "train.iterations=6", "train.checkpoint_every=3"
    )
    crash_then_resume(make_config, monkeypatch, common, tmp_path)

"""Tests for gan_lab.data: shapes, ranges, stream state, toy modes, IDX, image loaders, configs."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from PIL import Image

from gan_lab.config import CONF_DIR
from gan_lab.data import (
    METRIC_SUITES,
    Digits,
    FashionMNIST,
    GANDataModule,
    Gaussian1D,
    Grid,
    ImageFolderImages,
    LoaderStream,
    Ring,
    SamplerStream,
    TensorBatchStream,
    TorchvisionImages,
    batch_shortfall,
    check_split,
    load_digits,
    load_fashion_mnist,
    read_idx,
)
from gan_lab.data.images import FASHION_MNIST_SYSTEM_DIR
from tests.helpers import write_fake_fashion, write_idx

DATA_CONF = CONF_DIR / "data"
HAS_FASHION = (Path(FASHION_MNIST_SYSTEM_DIR) / "train-images-idx3-ubyte.gz").is_file()
REGET = "apt-get install dataset-fashion-mnist"


def first_batch(dm: GANDataModule) -> torch.Tensor:
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def assert_k_batches_differ(batch: torch.Tensor) -> None:
    flat = batch.flatten(2)
    for i in range(len(batch)):
        for j in range(i + 1, len(batch)):
            assert not torch.equal(flat[i], flat[j])


# --- toy data -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Gaussian1D, Ring, Grid])
def test_toy_shapes_and_k_batches(cls: type) -> None:
    dm = cls(batch_size=32, seed=1)
    dm.batches_per_step = 3
    batch = first_batch(dm)
    assert dm.kind == "toy"
    assert batch.shape == (3, 32, *dm.sample_shape)
    assert batch.dtype == torch.float32
    assert_k_batches_differ(batch)
    real = dm.real_samples(100, "test")
    assert real.shape == (100, *dm.sample_shape)
    assert torch.equal(real, cls(batch_size=32, seed=1).real_samples(100, "test"))
    assert not torch.equal(real, dm.real_samples(100, "train"))


def test_ring_modes_exact() -> None:
    ring = Ring()
    assert ring.modes.shape == (8, 2) and ring.std == 0.01
    angles = torch.arange(8) * (torch.pi / 4)
    expected = torch.stack([angles.cos(), angles.sin()], 1)
    assert torch.allclose(ring.modes, expected, atol=1e-6)
    assert torch.allclose(ring.modes.norm(dim=1), torch.ones(8), atol=1e-6)


def test_grid_modes_exact() -> None:
    grid = Grid()
    assert grid.modes.shape == (25, 2) and grid.std == 0.05
    expected = {(-4.0 + 2 * i, -4.0 + 2 * j) for i in range(5) for j in range(5)}
    assert {tuple(m) for m in grid.modes.tolist()} == expected


def test_mixture_samples_near_modes() -> None:
    grid = Grid()
    x = grid.real_samples(5000)
    nearest = torch.cdist(x, grid.modes).min(dim=1).values
    assert nearest.max() < 6 * grid.std
    assert len(torch.cdist(x, grid.modes).argmin(dim=1).unique()) == 25


def test_gaussian_1d_moments_and_log_prob() -> None:
    dm = Gaussian1D()
    x = dm.real_samples(20000)
    assert abs(x.mean().item() - 4.0) < 0.05 and abs(x.std().item() - 1.25) < 0.05
    peak = dm.log_prob(torch.tensor([4.0]))
    assert abs(peak.item() + np.log(1.25) + 0.5 * np.log(2 * np.pi)) < 1e-6


# --- streams --------------------------------------------------------------------------------


def take(iterator, n: int) -> list[torch.Tensor]:
    return [next(iterator) for _ in range(n)]


def test_tensor_stream_state_round_trip_across_epochs() -> None:
    data = torch.arange(40, dtype=torch.float32).unsqueeze(1)
    stream = TensorBatchStream(data, batch_size=3, batches_per_step=2, seed=7)  # 6 yields/epoch
    it = iter(stream)
    take(it, 5)
    state = stream.state_dict()
    expected = take(it, 3)  # crosses into the second epoch
    fresh = TensorBatchStream(data, batch_size=3, batches_per_step=2, seed=7)
    fresh.load_state_dict(state)
    got = take(iter(fresh), 3)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_tensor_stream_epoch_has_no_repeats_and_reshuffles() -> None:
    data = torch.arange(24, dtype=torch.float32).unsqueeze(1)
    it = iter(TensorBatchStream(data, batch_size=4, batches_per_step=2, seed=0))
    epoch1 = torch.cat([b.flatten() for b in take(it, 3)])
    epoch2 = torch.cat([b.flatten() for b in take(it, 3)])
    assert sorted(epoch1.tolist()) == list(range(24))
    assert not torch.equal(epoch1, epoch2)


def test_tensor_stream_too_small_raises() -> None:
    with pytest.raises(ValueError, match="is more than the"):
        TensorBatchStream(torch.zeros(5, 1), batch_size=4, batches_per_step=2)


def test_loader_stream_too_small_raises() -> None:
    dataset = torch.utils.data.TensorDataset(torch.zeros(5, 1))
    with pytest.raises(ValueError, match="is more than the 5 training samples"):
        LoaderStream(dataset, batch_size=3, batches_per_step=2)


def test_batch_shortfall_rule() -> None:
    assert batch_shortfall(8, batch_size=4, batches_per_step=2) is None
    assert batch_shortfall(7, batch_size=4, batches_per_step=2) == (
        "train.k_d_steps * data.batch_size = 2 * 4 = 8 is more than the 7 training samples; "
        "lower data.batch_size or train.k_d_steps"
    )


def test_check_split() -> None:
    assert [check_split(s) for s in ("train", "val", "test")] == ["train", "val", "test"]
    with pytest.raises(ValueError, match="unknown split 'dev'; expected one of 'train', 'val'"):
        check_split("dev")
    with pytest.raises(ValueError, match="unknown split"):
        Ring().real_samples(4, "dev")
    with pytest.raises(ValueError, match="unknown split"):
        Digits().images("dev")


@pytest.mark.parametrize("make", ["tensor", "sampler"])
def test_stream_state_before_first_yield_restarts_it(make: str) -> None:
    def build() -> TensorBatchStream | SamplerStream:
        if make == "tensor":
            data = torch.arange(20, dtype=torch.float32).unsqueeze(1)
            return TensorBatchStream(data, batch_size=2, batches_per_step=2, seed=4)
        return SamplerStream(Ring().sample, batch_size=4, batches_per_step=2, seed=4)

    stream = build()
    state = stream.state_dict()
    expected = take(iter(stream), 7)
    fresh = build()
    take(iter(fresh), 2)  # moved on, then restored to the start
    fresh.load_state_dict(state)
    got = take(iter(fresh), 7)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_sampler_stream_state_round_trip() -> None:
    stream = SamplerStream(Ring().sample, batch_size=8, batches_per_step=2, seed=5)
    it = iter(stream)
    take(it, 5)
    state = stream.state_dict()
    expected = take(it, 3)
    fresh = SamplerStream(Ring().sample, batch_size=8, batches_per_step=2, seed=5)
    fresh.load_state_dict(state)
    got = take(iter(fresh), 3)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_loader_stream_shapes_and_cycles() -> None:
    dataset = torch.utils.data.TensorDataset(
        torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    )
    it = iter(LoaderStream(dataset, batch_size=2, batches_per_step=2, seed=0))
    batches = take(it, 5)  # 2 yields per pass: cycles past the end
    assert all(b.shape == (2, 2, 1, 4, 4) and b.dtype == torch.float32 for b in batches)
    assert all(b.min() >= -1 and b.max() <= 1 for b in batches)


# --- IDX ------------------------------------------------------------------------------------


def test_idx_round_trip(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    labels = np.array([1, 2, 9], dtype=np.uint8)
    write_idx(tmp_path / "img.gz", images)
    write_idx(tmp_path / "lbl", labels)
    assert np.array_equal(read_idx(tmp_path / "img.gz"), images)
    assert np.array_equal(read_idx(tmp_path / "lbl"), labels)


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write((0x0803).to_bytes(4, "big")[::-1] + bytes(8))
    with pytest.raises(ValueError) as err:
        read_idx(path, expected_magic=0x00000803)
    message = str(err.value)
    assert "bad magic number 0x03080000 (expected 0x00000803)" in message
    assert str(path) in message and REGET in message


def test_idx_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    write_idx(path, np.zeros((2, 3, 3), dtype=np.uint8))
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(ValueError, match=r"truncated: expected 18 bytes .* got 13") as err:
        read_idx(path)
    assert "data.root=DIR" in str(err.value)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(b"not a gzip file")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(path)


# --- images ---------------------------------------------------------------------------------


def assert_image_batch(dm: GANDataModule, k: int = 2) -> None:
    dm.batches_per_step = k
    batch = first_batch(dm)
    assert dm.kind == "image"
    assert batch.shape == (k, dm.batch_size, *dm.sample_shape)
    assert batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    assert_k_batches_differ(batch)


def test_digits() -> None:
    dm = Digits(batch_size=16, seed=0)
    assert dm.sample_shape == (1, 8, 8)
    assert_image_batch(dm)
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    assert len(train_x) + len(test_x) == 1797 and len(test_x) == 359
    assert train_x.max() == 16 and test_y.dtype == np.int64
    real = dm.real_samples(50, "test")
    assert real.shape == (50, 1, 8, 8) and real.min() >= -1 and real.max() <= 1
    assert torch.equal(real, Digits(seed=0).real_samples(50, "test"))
    with pytest.raises(ValueError, match="replace=True"):
        dm.real_samples(1000, "test")
    assert dm.real_samples(1000, "test", replace=True).shape == (1000, 1, 8, 8)


def test_digits_resized_and_streamed() -> None:
    dm = Digits(resolution=16, batch_size=8, in_memory=False)
    assert_image_batch(dm)
    assert dm.real_samples(4).shape == (4, 1, 16, 16)


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    images, labels = load_fashion_mnist(str(tmp_path), "test")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    dm = FashionMNIST(root=str(tmp_path), resolution=32, batch_size=3)
    assert dm.sample_shape == (1, 32, 32)
    assert_image_batch(dm)


def test_fashion_mnist_missing_gives_guidance(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("gan_lab.data.images.FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(str(tmp_path), "train")
    message = str(err.value)
    assert str(tmp_path) in message and str(tmp_path / "none") in message
    assert REGET in message and "data.root=DIR" in message and "data.download=true" in message


def test_fashion_mnist_corrupt_file_names_it(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write((0x0803).to_bytes(4, "big") + bytes(16))
    with pytest.raises(ValueError, match="bad magic number 0x00000803 .expected 0x00000801."):
        load_fashion_mnist(str(tmp_path), "train")


@pytest.mark.skipif(not HAS_FASHION, reason=f"needs {FASHION_MNIST_SYSTEM_DIR}")
def test_real_fashion_mnist_system_dir() -> None:
    images, labels = load_fashion_mnist(None, "train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert set(np.unique(labels)) == set(range(10))
    dm = FashionMNIST(batch_size=64)
    assert_image_batch(dm, k=2)
    assert dm.real_samples(10000, "test").shape == (10000, 1, 28, 28)


def write_fake_mnist(root: Path, n: int = 10) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))


def test_torchvision_mnist_fake_files(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    dm = TorchvisionImages("MNIST", root=str(tmp_path), batch_size=2)
    assert dm.sample_shape == (1, 28, 28)
    assert_image_batch(dm)
    assert dm.num_samples("test") == 10


def test_torchvision_cifar10_fake_files(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [str(i) for i in range(10)]})
    )
    # torchvision's CIFAR10 checks every file's md5 (batches and meta), which fake files cannot
    # match; keep only its existence check.
    monkeypatch.setattr(
        "torchvision.datasets.cifar.check_integrity", lambda path, md5=None: Path(path).is_file()
    )
    dm = TorchvisionImages("CIFAR10", root=str(tmp_path), resolution=16, batch_size=4)
    assert dm.sample_shape == (3, 16, 16)
    assert_image_batch(dm)
    assert dm.num_samples("train") == 20


def test_torchvision_missing_files(tmp_path: Path) -> None:
    dm = TorchvisionImages("MNIST", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data.download=true") as err:
        dm.setup("fit")
    assert str(tmp_path) in str(err.value)


def write_pngs(folder: Path, n: int = 6) -> None:
    rng = np.random.default_rng(3)
    (folder / "cats").mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "cats" / f"{i}.png")


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path: Path, in_memory: bool, channels: int) -> None:
    write_pngs(tmp_path)
    dm = ImageFolderImages(str(tmp_path), resolution=8, channels=channels, batch_size=2)
    dm.in_memory = in_memory
    assert dm.sample_shape == (channels, 8, 8)
    assert_image_batch(dm)
    assert dm.real_samples(3).shape == (3, channels, 8, 8)


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None])
def test_image_folder_empty_or_missing(tmp_path: Path, make) -> None:
    folder = tmp_path / "imgs"
    make(folder)
    with pytest.raises(FileNotFoundError, match="imgs"):
        ImageFolderImages(str(folder), resolution=8).setup("fit")


# --- configs --------------------------------------------------------------------------------


def assert_declares_metrics(dm: GANDataModule) -> None:
    """``dm.metrics`` is a known suite and ``dm`` has what that suite reads."""
    assert dm.metrics in METRIC_SUITES
    if dm.metrics == "features":
        assert dm.kind == "image" and len(dm.sample_shape) == 3
        assert type(dm).num_samples is not GANDataModule.num_samples
    elif dm.metrics == "modes":
        assert dm.modes.ndim == 2 and dm.modes.shape[1] == dm.sample_shape[0]
        assert dm.std > 0 and dm.num_samples() is None
    else:
        assert dm.sample_shape == (1,) and isinstance(dm.mean, int | float) and dm.std > 0
        assert dm.num_samples() is None


# The committed classifier each shipped data config declares (gan_lab/metrics/weights/).
CLASSIFIERS = {"digits": "digits", "fashion_mnist": "fashion_mnist"}


@pytest.mark.parametrize("path", sorted(DATA_CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_instantiates(path: Path, tmp_path: Path) -> None:
    cfg = OmegaConf.merge({"seed": 3}, {"data": OmegaConf.load(path)})
    if OmegaConf.is_missing(cfg.data, "root"):
        cfg.data.root = str(tmp_path)
    dm = instantiate(cfg.data)
    assert isinstance(dm, GANDataModule)
    assert dm.seed == 3 and dm.kind in ("toy", "image")
    assert len(dm.sample_shape) in (1, 3)
    assert_declares_metrics(dm)
    assert dm.classifier == CLASSIFIERS.get(path.stem)


def test_config_set_is_complete() -> None:
    names = {p.stem for p in DATA_CONF.glob("*.yaml")}
    expected = {"gaussian_1d", "ring", "grid", "digits", "fashion_mnist", "mnist", "cifar10"}
    assert expected | {"image_folder"} <= names


# --- Lightning resume -----------------------------------------------------------------------


class _Recorder(L.LightningModule):
    """Trains nothing; records every batch Lightning feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.clone())
        return (self.weight * batch.mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(dm: GANDataModule, tmp_path: Path, ckpt_path: str | None = None) -> _Recorder:
    module = _Recorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    # An int limit_train_batches, as gan_lab's trainer sets: then Lightning does not prefetch,
    # and a stream's state_dict is the state after the last batch trained on.
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=6,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module


@pytest.mark.parametrize(
    "make",
    [lambda: Ring(batch_size=4), lambda: Digits(batch_size=100, device_resident=True)],
    ids=["ring", "digits_device_resident"],
)
def test_lightning_resume_continues_data_order(tmp_path: Path, make) -> None:
    full = _fit(make(), tmp_path / "a")
    ckpt = next((tmp_path / "a").glob("*step=3.ckpt"))
    resumed = _fit(make(), tmp_path / "b", ckpt_path=str(ckpt))
    assert len(full.seen) == 6 and len(resumed.seen) == 3
    assert all(torch.equal(a, b) for a, b in zip(full.seen[3:], resumed.seen, strict=True))

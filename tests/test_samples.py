"""Sample grids are readable: small images enlarged in whole pixels, real images beside fakes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.utils import make_grid

from gan_lab.callbacks.samples import SampleGrid, image_grid
from gan_lab.train import fit
from tests.conftest import compose_config

# A short digits run (8x8 images, 64 in the fixed grid) with the default callbacks.
DIGITS = [
    "experiment=digits_dcgan",
    "callbacks=default",
    "eval=none",
    "trainer.enable_progress_bar=false",
    "data.batch_size=16",
    "model.g.base_channels=8",
    "model.d.base_channels=8",
    "train.iterations=4",
    "train.log_every=1",
    "train.checkpoint_every=1000",
]
# 64 images of 8x8 x4, tiled 8 by 8 with make_grid's 2 px padding: 8 * (32 + 2) + 2.
DIGITS_GRID = 274


@pytest.mark.parametrize(("size", "factor"), [(8, 4), (28, 2), (64, 1)])
def test_small_images_are_enlarged_in_whole_pixel_blocks_and_large_ones_are_not(size, factor):
    samples = torch.rand(64, 1, size, size) * 2 - 1
    grid = image_grid(samples)
    side = 8 * (size * factor + 2) + 2
    assert grid.shape == (3, side, side)
    assert grid.min() >= 0 and grid.max() <= 1
    # Each image sits at its place in the grid, every source pixel a factor x factor block.
    for index in (0, 9, 63):
        row, col = divmod(index, 8)
        top, left = 2 + row * (size * factor + 2), 2 + col * (size * factor + 2)
        tile = grid[0, top : top + size * factor, left : left + size * factor]
        blocks = tile.reshape(size, factor, size, factor)
        assert torch.equal(blocks, blocks[:, :1, :, :1].expand_as(blocks))
        assert torch.allclose(blocks[:, 0, :, 0], (samples[index, 0] + 1) / 2, atol=1e-6)
    if factor == 1:  # exactly the grid torchvision makes
        assert torch.equal(grid, make_grid(samples, nrow=8, normalize=True, value_range=(-1, 1)))


def _fit(out: Path, *overrides: str):
    return fit(compose_config([*DIGITS, *overrides], out))


def test_a_digits_run_writes_a_real_grid_beside_the_fakes_at_the_enlarged_size(tmp_path):
    result = _fit(tmp_path, "logger=tensorboard", "train.sample_every=2")
    samples = tmp_path / "samples"
    names = sorted(p.name for p in samples.glob("*.png"))
    assert names == ["iter_0000000.png", "iter_0000002.png", "iter_0000004.png", "real.png"]
    for name in names:
        assert Image.open(samples / name).size == (DIGITS_GRID, DIGITS_GRID), name
    # The real grid holds as many training images as the fake one, drawn by the data's seed.
    expected = image_grid(result.datamodule.real_samples(64, "train").cpu())
    real = torch.from_numpy(np.asarray(Image.open(samples / "real.png")))
    assert torch.equal(real.permute(2, 0, 1), expected.mul(255).add(0.5).clamp(0, 255).byte())

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("real")] == [0]
    assert [e.step for e in events.Images("samples")] == [0, 2, 4]
    for key in ("real", "samples"):
        assert {(e.width, e.height) for e in events.Images(key)} == {(DIGITS_GRID, DIGITS_GRID)}


def test_drawing_the_real_grid_does_not_change_training(tmp_path, monkeypatch):
    """The same run with and without the real grid writes byte-identical metrics.csv."""
    _fit(tmp_path / "with", "logger=csv")
    monkeypatch.setattr(SampleGrid, "draw_real", lambda self, trainer, pl_module: None)
    _fit(tmp_path / "without", "logger=csv")
    assert (tmp_path / "with" / "samples" / "real.png").is_file()
    assert not (tmp_path / "without" / "samples" / "real.png").exists()
    with_real = (tmp_path / "with" / "metrics.csv").read_bytes()
    assert with_real.count(b"\n") > 4  # one row per iteration and a header
    assert with_real == (tmp_path / "without" / "metrics.csv").read_bytes()


def test_a_resumed_run_keeps_its_real_grid_and_toy_runs_draw_none(tmp_path):
    grid = SampleGrid(str(tmp_path / "samples"))
    images = torch.rand(100, 1, 8, 8) * 2 - 1
    datamodule = SimpleNamespace(
        kind="image", num_samples=lambda split: 100, real_samples=lambda n, split: images[:n]
    )
    trainer = SimpleNamespace(datamodule=datamodule, loggers=[])
    resumed = SimpleNamespace(iteration=5, fixed_z=torch.zeros(16, 4))
    # Resumed without a real grid (a run from before this callback drew one): draw it.
    path = grid.draw_real(trainer, resumed)
    assert path == tmp_path / "samples" / "real.png"
    assert Image.open(path).size == (4 * 34 + 2, 4 * 34 + 2)  # 16 images 4 by 4, x4
    # Resumed with one: keep it.
    path.write_bytes(b"kept")
    assert grid.draw_real(trainer, resumed) is None
    assert path.read_bytes() == b"kept"
    # A fresh run (iteration 0) draws anew; toy data plots real beside fake already.
    assert grid.draw_real(trainer, SimpleNamespace(iteration=0, fixed_z=torch.zeros(16, 4)))
    assert path.read_bytes() != b"kept"
    trainer.datamodule = SimpleNamespace(kind="toy")
    path.unlink()
    assert grid.draw_real(trainer, resumed) is None
    assert not path.exists()

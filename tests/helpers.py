"""Test-only helpers: callbacks, added to a run with
``+callbacks.<name>._target_=tests.helpers.<Class>``, and small data fixtures in real formats."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fake_fashion(root: Path, n: int = 12) -> None:
    """Fashion-MNIST's four IDX files under ``root``, ``n`` random images per split."""
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def write_image_folder(root: Path, n: int) -> Path:
    """``n`` random 8x8 grayscale PNGs in the ImageFolder layout ``root/<class>/<i>.png``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(image).save(root / "blobs" / f"{i}.png")
    return root


def image_folder_overrides(root: Path, num_workers: int, *train: str) -> list[str]:
    """A tiny streamed (``in_memory=false``) image-folder run over ``write_image_folder``'s
    images: k=2 minibatches of 4, 4-channel DCGAN, no evaluation; ``train`` adds the budget."""
    return [
        "data=image_folder",
        f"data.root={root}",
        "data.in_memory=false",
        f"data.num_workers={num_workers}",
        "data.resolution=8",
        "data.channels=1",
        "data.batch_size=4",
        "train.k_d_steps=2",
        "model.g.base_channels=4",
        "model.d.base_channels=4",
        "eval=none",
        "logger=csv",
        "callbacks=default",
        "train.sample_every=1000",
        *train,
    ]


class Throttle(Callback):
    """Writes the finished iteration to ``progress_file`` and sleeps ``seconds`` per iteration,
    so a test can signal a subprocess while it is part-way through its budget.

    The sleep is at the end of an iteration (after the callbacks listed before this one) or,
    with ``at_start``, at the start of the next, before its update: where a signal sent during
    the sleep lands decides which path of a clean stop it takes.
    """

    def __init__(self, progress_file: str, seconds: float = 0.0, at_start: bool = False) -> None:
        self.progress_file = Path(progress_file)
        self.seconds = seconds
        self.at_start = at_start

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if self.at_start:
            time.sleep(self.seconds)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self.progress_file.write_text(str(pl_module.iteration))
        if not self.at_start:
            time.sleep(self.seconds)


class NaNBatches(Callback):
    """Fills the real batches of iterations ``first``..``last`` (1-based, ``last=None``: every
    later one) with NaN: D's loss is non-finite there, as with corrupt data. Under DDP,
    ``rank`` picks the one rank whose data is corrupt."""

    def __init__(self, first: int, last: int | None = None, rank: int | None = None) -> None:
        self.first = first
        self.last = last
        self.rank = rank

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, *args: Any):
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        iteration = pl_module.iteration + 1
        if iteration >= self.first and (self.last is None or iteration <= self.last):
            batch.fill_(float("nan"))


class SignalAt(Callback):
    """Sends ``signal_name`` ``times`` times to this very process at the end of ``iteration``
    (after the callbacks listed before it): a signal at a known point, without a subprocess.
    Under DDP, ``rank`` picks the one rank that signals itself (rank 0: the launcher)."""

    def __init__(
        self, iteration: int, signal_name: str = "SIGINT", times: int = 1, rank: int | None = None
    ) -> None:
        self.iteration = iteration
        self.signal_name = signal_name
        self.times = times
        self.rank = rank

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        import signal

        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if pl_module.iteration == self.iteration:
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, self.signal_name))


class DumpRank(Callback):
    """Saves each rank's final state, its parameters and its local (un-reduced) G losses to
    ``<dirpath>/rank<r>.pt``, so a DDP test can compare ranks."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.g_losses: list[float] = []

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        step = pl_module.generator_step

        def recording_step(*args: Any) -> Any:
            loss = step(*args)
            self.g_losses.append(float(loss))
            return loss

        pl_module.generator_step = recording_step

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        import torch

        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        weights = {k: v.detach().cpu() for k, v in pl_module.named_parameters()}
        torch.save(
            {"state_dict": state, "parameters": weights, "g_losses": self.g_losses},
            self.dirpath / f"rank{trainer.global_rank}.pt",
        )


class RankPid(Callback):
    """Writes each rank's process id to ``<dirpath>/rank<r>.pid`` when training starts, so a
    test can kill one rank of a DDP run."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"rank{trainer.global_rank}.pid").write_text(str(os.getpid()))


def run_cli(*args: str, timeout: float = 100, cwd: Path | None = None) -> Any:
    """``python -m gan_lab.train ARGS`` in its own process group from ``cwd`` (default: the repo
    root); fails the test with the end of stderr unless it exits 0, and with the processes'
    stacks if it outlives ``timeout`` (below the per-test timeout, so this diagnosis comes
    first)."""
    import sys

    from tests import processes

    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    return processes.run(
        [sys.executable, "-m", "gan_lab.train", *args],
        timeout=timeout,
        cwd=cwd or Path(__file__).resolve().parents[1],
        env=env,
    )


def write_images(root: Path, names: list[str], size: tuple[int, int] = (8, 8)) -> list[Path]:
    """Random RGB images at ``root/<name>`` for each name (sub-folders made as needed), saved in
    the format the extension says (.png, .jpg ...); returns their paths in ``names``' order."""
    from PIL import Image

    rng = np.random.default_rng(4)
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to the first ``keep`` of its bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path

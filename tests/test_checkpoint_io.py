"""Checkpoint files: clear errors for truncated/foreign files; a kill mid-save keeps last.ckpt."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.errors import BadFileError
from gan_lab.train import fit
from tests import processes

ROOT = Path(__file__).resolve().parents[1]


def test_truncated_checkpoint_names_the_file(make_config, tmp_path):
    cfg = make_config(
        "experiment=ring_mlp", "model.g.hidden=[8]", "model.d.hidden=[8]", "callbacks=default"
    )
    fit(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadFileError) as error:
        load_checkpoint_file(last)
    assert str(last) in str(error.value) and "truncated" in str(error.value)
    # Resuming from it fails the same way, naming the file.
    with pytest.raises(BadFileError, match=str(last)):
        fit(
            make_config(
                "experiment=ring_mlp",
                "model.g.hidden=[8]",
                "model.d.hidden=[8]",
                "callbacks=default",
                "ckpt_path=last",
            )
        )


def test_foreign_file_names_the_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(BadFileError, match=f"{path} is not a Lightning checkpoint"):
        load_checkpoint_file(path)


SAVER = """
import sys, torch
from gan_lab.checkpoint_io import atomic_torch_save
path, ready = sys.argv[1], sys.argv[2]
i = 0
while True:
    atomic_torch_save({"state_dict": {"w": torch.full((4_000_000,), float(i))}, "i": i}, path)
    i += 1
    open(ready, "w").write(str(i))
"""


def test_kill_during_save_keeps_last_loadable(tmp_path):
    last, ready = tmp_path / "last.ckpt", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = processes.spawn([sys.executable, "-c", SAVER, str(last), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (ready.is_file() and ready.read_text() and int(ready.read_text()) >= 2):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        # Each save of 16 MB takes a while; a partial temp file shows the kill lands mid-write.
        while not list(tmp_path.glob(".last.ckpt.*.tmp")):
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        processes.stop(process)
    checkpoint = load_checkpoint_file(last)
    w = checkpoint["state_dict"]["w"]
    assert w.shape == (4_000_000,) and torch.all(w == checkpoint["i"])

"""Missing or corrupt data fails through ``gan_lab.train`` with how to get the data."""

from __future__ import annotations

import gzip

import pytest

from gan_lab.train import fit
from tests.helpers import write_fake_fashion

FASHION = ["data=fashion_mnist", "model=mlp", "model.g.hidden=[8]", "model.d.hidden=[8]"]
GUIDANCE = ("apt-get install dataset-fashion-mnist", "data.root=", "data.download=true")


def test_missing_fashion_mnist_end_to_end(make_config, monkeypatch, tmp_path):
    # Hide the Debian package's copy so the run really has no data.
    monkeypatch.setattr("gan_lab.data.images.FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError) as error:
        fit(make_config(*FASHION, "data.root=/nonexistent"))
    message = str(error.value)
    assert "/nonexistent" in message
    assert all(hint in message for hint in GUIDANCE), message


def test_corrupt_idx_end_to_end(make_config, tmp_path):
    root = tmp_path / "fashion"
    root.mkdir()
    write_fake_fashion(root)
    bad = root / "train-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        header = b"".join(n.to_bytes(4, "big") for n in (0x0803, 12, 28, 28))
        f.write(header + bytes(100))  # 12 images promised, 100 bytes given
    with pytest.raises(ValueError) as error:
        fit(make_config(*FASHION, f"data.root={root}"))
    message = str(error.value)
    assert str(bad) in message and "truncated" in message
    assert all(hint in message for hint in GUIDANCE), message


def test_bad_magic_end_to_end(make_config, tmp_path):
    root = tmp_path / "fashion"
    root.mkdir()
    write_fake_fashion(root)
    bad = root / "train-labels-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write((0x0803).to_bytes(4, "big") + bytes(16))
    with pytest.raises(ValueError) as error:
        fit(make_config(*FASHION, f"data.root={root}"))
    message = str(error.value)
    assert str(bad) in message and "bad magic number 0x00000803 (expected 0x00000801)" in message
    assert all(hint in message for hint in GUIDANCE), message

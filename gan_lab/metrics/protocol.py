"""The protocol of a metric: everything its number depends on, recorded beside the number.

FIDs are comparable only on equal protocols (reference split and size, number of generated
samples, extractor weights, resizing): each moves FID by points. Every evaluation records its
suite's protocol (metrics.json, the ``done`` record, the loggers' config) with an ``id``, a
digest of the fields that decide the numbers; ``gan_lab.report`` puts numbers side by side only
where the ids are equal. The gan_lab version is recorded but not part of the id, so one study
spans commits of one release.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Bump when what a protocol records (or how its numbers are computed) changes incompatibly.
PROTOCOL_SCHEMA = 1
# Recorded, not part of the id (see the module docstring).
UNHASHED = ("id", "gan_lab_version")


def gan_lab_version() -> str:
    """The installed gan_lab version ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version("gan_lab")
    except metadata.PackageNotFoundError:
        return "unknown"


def digest(value: Any) -> str:
    """``sha256:<hex>`` of ``value`` as canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def with_id(protocol: dict[str, Any]) -> dict[str, Any]:
    """``protocol`` with its schema, the gan_lab version and its ``id``."""
    protocol = {"schema": PROTOCOL_SCHEMA, **protocol, "gan_lab_version": gan_lab_version()}
    protocol["id"] = protocol_id(protocol)
    return protocol


def protocol_id(protocol: dict[str, Any]) -> str:
    """The digest of the fields of ``protocol`` that decide its numbers."""
    return digest({key: value for key, value in protocol.items() if key not in UNHASHED})


def file_sha256(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes, computed once per (path, size, mtime) in a process:
    Inception's weights are 91 MB."""
    stat = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


def tensor_sha256(x: Tensor) -> str:
    """``sha256:<hex>`` of a tensor's values (dtype and shape included): the fingerprint of the
    exact reference images a metric compared against."""
    x = x.detach().to("cpu").contiguous()
    sha = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    sha.update(x.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + sha.hexdigest()


def module_sha256(module: nn.Module) -> str:
    """``sha256:<hex>`` of a module's parameters and buffers, by name: the weights of an
    extractor that names no weights file (features cached under a class name alone could be
    another instance's)."""
    sha = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor_sha256(tensor).encode())
    return "sha256:" + sha.hexdigest()

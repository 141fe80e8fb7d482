"""Real-image features on disk, keyed by the protocol that made them.

The real side of FID/KID/precision/recall depends only on the reference images, the extractor
and the preprocessing (gan_lab.metrics.protocol): every run of a sweep on one dataset, and
every later ``gan_lab.evaluate`` of its checkpoints, reuses the features the first one
extracted. A file is written atomically and carries a checksum of its features: a torn,
truncated or edited file is detected, reported and recomputed, never used.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gan_lab.metrics.protocol import digest, tensor_sha256

log = logging.getLogger(__name__)

# Bump when the stored features change meaning (a new extractor forward, a new dtype).
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gan_lab/reference_features`` (``~/.cache/...`` without it): the
    default of ``eval.evaluator.cache_dir`` (null in the eval group's YAML)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "gan_lab" / "reference_features"


def reference_key(reference_protocol: dict[str, Any]) -> str:
    """The cache key of the real features a protocol's reference part describes."""
    return digest({"cache_format": CACHE_FORMAT, **reference_protocol})


@dataclass(frozen=True)
class ReferenceCache:
    """A directory of ``<key>.pt`` files, each ``{"key", "features", "sha256", "protocol"}``."""

    directory: Path

    @classmethod
    def at(cls, directory: str | Path | None) -> ReferenceCache:
        return cls(Path(directory) if directory else default_cache_dir())

    def path(self, key: str) -> Path:
        return self.directory / f"{key.removeprefix('sha256:')[:32]}.pt"

    def load(self, key: str) -> Tensor | None:
        """The features stored under ``key``, or None (absent, or corrupt: warned)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            features = blob["features"]
            intact = blob["key"] == key and blob["sha256"] == tensor_sha256(features)
        # A torn or foreign file fails in torch.load's zip or unpickling layers with many error
        # types; any of them means the same: recompute.
        except Exception as err:  # noqa: BLE001
            intact, reason = False, f"{type(err).__name__}: {err}"
        else:
            reason = "its checksum or key does not match its contents"
        if not intact:
            log.warning("reference features %s are corrupt (%s): recomputing them", path, reason)
            return None
        return features

    def save(self, key: str, features: Tensor, protocol: dict[str, Any]) -> Path | None:
        """Store ``features`` under ``key`` atomically; None (warned) when the directory cannot
        be written: the metrics are computed all the same, only not cached."""
        path = self.path(key)
        features = features.detach().to("cpu").contiguous()
        blob = {"key": key, "features": features, "sha256": tensor_sha256(features)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    torch.save({**blob, "protocol": protocol}, file)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            log.warning("reference features not cached (%s): set eval.evaluator.cache_dir", err)
            return None
        return path

"""torch's global RNGs: snapshot and restore (resume), and isolation from them (observation).

The global RNG is the training noise stream (z, instance noise, gradient-penalty mixes).
Anything that only observes a run (metrics, sample plots, evaluate.py) draws from generators of
its own or runs inside ``isolated_rng``, so how often a run is observed cannot change it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """torch's CPU generator, every CUDA device's when CUDA is in use, numpy's and Python's.

    gan_lab itself draws from torch's only; numpy's and Python's are kept for user code (a
    loss or augmentation of one's own). Plain containers and tensors, so that checkpoints load
    with ``weights_only=True``.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    version, internal, gauss_next = random.getstate()
    state["python"] = {"version": version, "state": list(internal), "gauss_next": gauss_next}
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored only where CUDA is present,
    numpy's and Python's where the state has them (older checkpoints hold torch's only)."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "numpy" in state:
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            (saved["kind"], keys, saved["position"], saved["has_gauss"], saved["cached_gaussian"])
        )
    if "python" in state:
        saved = state["python"]
        random.setstate((saved["version"], tuple(saved["state"]), saved["gauss_next"]))


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for ``purpose`` ("evaluation", "fixed_z", ...) derived from the run seed.

    A hash, not ``seed + offset``: streams of different purposes (and of nearby run seeds) do not
    overlap, and none equals the training stream that ``seed_everything(seed)`` starts.
    """
    digest = hashlib.sha256(f"gan_lab/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # below 2**63: any torch generator takes it


def seeded_generator(seed: int, purpose: str) -> torch.Generator:
    """A fresh CPU generator for ``purpose``: the same numbers on every call and every device."""
    return torch.Generator().manual_seed(derived_seed(seed, purpose))


@contextmanager
def isolated_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the block on global RNGs seeded with ``seed``; restore the previous states after it.

    Library code that samples from the global RNG (torchmetrics' KID draws its subsets with
    ``torch.randperm``) is then reproducible, and the training stream goes on as if the block
    had never run. Covers the CPU generator and ``device``'s when it is a CUDA device.
    """
    cuda = [] if device is None or device.type != "cuda" else [device]
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for each in cuda:
            with torch.cuda.device(each):  # this device only; manual_seed would seed all
                torch.cuda.manual_seed(seed)
        yield

"""torch's global RNGs: snapshot and restore (resume), and isolation from them (observation).

The global RNG is the training noise stream (z, instance noise, gradient-penalty mixes).
Anything that only observes a run (metrics, sample plots, evaluate.py) draws from generators of
its own or runs inside ``isolated_rng``, so how often a run is observed cannot change it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def capture_rng_state() -> dict[str, Any]:
    """The CPU generator state, and every CUDA device's when CUDA is in use."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored only where CUDA is present."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


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

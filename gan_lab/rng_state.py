"""Snapshot and restore of torch's global RNGs, so a resumed run draws the same noise."""

from __future__ import annotations

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

"""Non-finite loss guard: notice NaN/Inf in D or G losses without a host sync every step.

Policy ``stop`` keeps, on the loss's device, the first iteration at which each loss went
non-finite and reads it back (one host sync) only every ``check_every`` iterations and before
any checkpoint write. Policy ``skip`` must decide before each ``optimizer.step()`` and so syncs
every update; it drops non-finite updates and stops at the end of the iteration in which the
``max_skips``-th was dropped, applying no further update in it.

Under DDP both decisions are taken over all ranks (one all-reduce where a single process syncs
with the host): gradients are all-reduced, so one rank's non-finite loss makes every rank's
update non-finite, and a rank that skipped or stopped alone would leave the others waiting in a
collective it never reaches.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from gan_lab.distributed import all_min

log = logging.getLogger(__name__)

LOSSES = ("d_loss", "g_loss")
POLICIES = ("stop", "skip")
_NEVER = torch.iinfo(torch.int64).max


class NonFiniteGuard:
    """Tracks the finiteness of the D and G losses; see the module docstring for the policies."""

    # The defaults of all three are the train group's (gan_lab.config.TrainSettings).
    def __init__(self, on_nan: str, check_every: int, max_skips: int) -> None:
        if on_nan not in POLICIES:
            raise ValueError(f"train.on_nan must be 'stop' or 'skip', got {on_nan!r}")
        self.on_nan = on_nan
        self.check_every = check_every
        self.max_skips = max_skips
        self.skipped = 0
        self.stop_message: str | None = None
        self._first_bad: Tensor | None = None  # per loss: first non-finite iteration, on device

    def allow_step(self, name: str, loss: Tensor, iteration: int) -> bool:
        """Record ``loss`` (iteration counted from 1); False means: skip this optimizer step."""
        if self.on_nan == "skip":
            if self.stop_message is not None:  # max_skips reached earlier in this iteration
                return False
            finite = torch.isfinite(loss).all().to(torch.int32)
            if bool(all_min(finite)):  # the per-update sync this policy needs
                return True
            self.skipped += 1
            log.warning("non-finite %s at iteration %d: update skipped", name, iteration)
            self._check_skips()
            return False
        if self._first_bad is None:
            self._first_bad = torch.full((len(LOSSES),), _NEVER, device=loss.device)
        index = LOSSES.index(name)
        bad_at = torch.where(torch.isfinite(loss).all(), _NEVER, iteration)
        self._first_bad[index] = torch.minimum(self._first_bad[index], bad_at)
        return True

    def due(self, iteration: int) -> bool:
        """Whether to check at the end of this iteration: on the cadence, or at once when the
        skip policy reached ``max_skips`` (so a run never skips more than ``max_skips``)."""
        return iteration % self.check_every == 0 or self.stop_message is not None

    def _check_skips(self) -> None:
        if self.stop_message is None and self.skipped >= self.max_skips:
            self.stop_message = (
                f"stopping: {self.skipped} non-finite updates skipped "
                f"(train.max_skips={self.max_skips})"
            )

    def check(self) -> bool:
        """True while training may go on; on failure ``stop_message`` says why (one host sync)."""
        if self.stop_message is not None:
            return False
        if self.on_nan == "skip":
            self._check_skips()  # also covers a count restored from a checkpoint
            return self.stop_message is None
        if self._first_bad is None:
            return True
        first_bad = all_min(self._first_bad).tolist()
        bad = [(at, name) for at, name in zip(first_bad, LOSSES, strict=True) if at != _NEVER]
        if bad:
            at, name = min(bad)
            self.stop_message = (
                f"stopping: non-finite {name} at iteration {at} (train.on_nan=stop); "
                "the last good checkpoint is kept"
            )
        return self.stop_message is None

"""SIGINT/SIGTERM: finish the current iteration, save ``last.ckpt``, stop before the next one.

SIGTERM goes through Lightning's own handler (``_SignalConnector``), which sets
``trainer.received_sigterm``; after the iteration's hooks and logging Lightning raises
``SIGTERMException``. SIGINT (Ctrl+C) would otherwise raise ``KeyboardInterrupt`` mid-update;
this callback replaces it by a flag while training runs, and the module stops before the next
iteration starts (``GANModule.request_stop``). Either way the checkpoint written here is the state
at that iteration boundary, and ``gan_lab.train`` exits with 130 (SIGINT) or 143 (SIGTERM).

Stopping raises instead of setting ``trainer.should_stop``: Lightning sends the loggers its last
logged values again when ``should_stop`` is set on a non-logging iteration (a stale row in
metrics.csv), and runs the end-of-training hooks (a sample grid, a final evaluation) that an
uninterrupted run does not have at that iteration.

Under DDP the ranks stop together. A signal reaches them at different moments (or one rank
only: ``kill`` of the launcher), so at each iteration end they take the strongest signal any
of them has seen (one all-reduce) and all stop at that boundary, where the checkpoint save
(collective) is reached by every rank. SIGTERM then gets a flag-setting handler like SIGINT's:
Lightning's broadcasts from inside the handler, wherever each rank happens to be, a collective
out of step with the other ranks' (and its ``SIGTERMException`` comes per rank).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gan_lab.callbacks.checkpoint import IterationCheckpoint
from gan_lab.distributed import all_max
from gan_lab.stopping import Interrupted, StopNow

# Signals by strength, for the ranks' agreement: a Ctrl+C anywhere makes the stop a SIGINT.
_SIGNALS = (None, "SIGTERM", "SIGINT")


class Interruption(Callback):
    """Saves ``<dirpath>/last.ckpt`` at the next iteration boundary after SIGINT or SIGTERM."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._announce = True

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:  # second Ctrl+C: give up on a clean stop
            raise StopNow
        self.signal_name = "SIGINT"
        if self._announce:
            print("\n[gan_lab] SIGINT: saving at the end of this iteration", file=sys.stderr)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = "SIGTERM"

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.signal_name = None
        self._announce = trainer.is_global_zero
        handlers = {signal.SIGINT: self._on_sigint}
        if trainer.world_size > 1:
            handlers[signal.SIGTERM] = self._on_sigterm
        for signum, handler in handlers.items():
            previous = signal.getsignal(signum)
            try:
                signal.signal(signum, handler)
            except ValueError:  # not the main thread (e.g. some launchers): keep the default
                continue
            self._previous[signum] = previous

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if self.signal_name is None and trainer.received_sigterm:
            self.signal_name = "SIGTERM"
        name = self.signal_name
        if trainer.world_size > 1:  # every rank, every iteration: the stop is decided together
            seen = torch.tensor([_SIGNALS.index(name)], device=pl_module.device)
            # Into a local: a signal handled while the all-reduce blocked (its usual moment)
            # sets signal_name after ``seen`` was taken, and counts at the next iteration.
            name = _SIGNALS[int(all_max(seen).item())]
        if name is not None:
            # The checkpoint callback runs after this one and saves a module that is stopping,
            # once it has taken this iteration's metrics into account (best.ckpt).
            self._stop(trainer, pl_module, name, save_now=False)

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        # SIGTERM that arrived after the checkpoint callback's on_train_batch_end (e.g. during
        # the logging): Lightning raises at the end of that same iteration, before the next batch
        # is fetched, so the state is still that of the iteration boundary.
        if isinstance(exception, SIGTERMException):
            self.signal_name = "SIGTERM"
            self._stop(trainer, pl_module, "SIGTERM", save_now=True)

    def _stop(self, trainer: L.Trainer, pl_module: Any, name: str, save_now: bool) -> None:
        if pl_module.stopped is not None:  # already stopping (this signal, or divergence)
            return
        checkpoints = [c for c in trainer.callbacks if isinstance(c, IterationCheckpoint)]
        path = checkpoints[0].last_path if checkpoints else self.dirpath / "last.ckpt"
        if not pl_module.check_finite():
            saved = "not saved (non-finite weights; the last good checkpoint is kept)"
        else:
            saved = f"saved {path}"
            if checkpoints and save_now:  # a save it already made this iteration is reused
                checkpoints[0].save(trainer, pl_module)
            elif not checkpoints:
                trainer.save_checkpoint(path, weights_only=False)
        pl_module.request_stop(
            Interrupted(
                f"{name} at iteration {pl_module.iteration}: {saved}; resume with "
                f"the same overrides plus ckpt_path=last hydra.run.dir={path.parent.parent}",
                pl_module.iteration,
                name,
            )
        )

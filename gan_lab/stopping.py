"""Runs that end before their budget: why, and the exit status each reason gives the CLI.

=======  ==================================================================================
status   meaning
=======  ==================================================================================
0        the run trained its whole budget (``done`` written)
1        a user error (one line on stderr) or a bug (a traceback)
2        a malformed command line
3        diverged: non-finite losses (``train.on_nan=stop``) or ``train.max_skips`` skipped
         updates; the last good ``last.ckpt`` is kept
130      SIGINT (Ctrl+C): ``last.ckpt`` saved at an iteration boundary; a sweep stops
143      SIGTERM (schedulers, ``kill``): the same
=======  ==================================================================================

From Python (``gan_lab.train``) a stop raises the ``StoppedEarly`` subclass instead.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_DIVERGED = 3
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class StoppedEarly(Exception):
    """Training ended before its budget; the CLI exits with ``exit_status``."""

    exit_status = 1

    def __init__(self, message: str, iteration: int, reason: str) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.reason = reason  # "non-finite", "max-skips", "SIGINT" or "SIGTERM"


class Diverged(StoppedEarly):
    """Non-finite losses (``train.on_nan=stop``) or ``train.max_skips`` skipped updates."""

    exit_status = EXIT_DIVERGED


class Interrupted(StoppedEarly):
    """SIGINT or SIGTERM. The Interruption callback saves ``last.ckpt`` at the iteration
    boundary first (if the weights are finite); a second Ctrl+C, or one outside the training
    loop, stops at once, saving nothing."""

    def __init__(self, message: str, iteration: int, signal_name: str) -> None:
        super().__init__(message, iteration, signal_name)
        self.exit_status = EXIT_SIGINT if signal_name == "SIGINT" else EXIT_SIGTERM


def exit_status(stop: StoppedEarly) -> int | None:
    """The status the CLI exits with after ``stop``; None for a diverged job of a multirun,
    which is one of the sweep's results rather than its end (the next job runs)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if isinstance(stop, Diverged) and in_multirun:
        return None
    return stop.exit_status


class StopNow(BaseException):
    """Ctrl+C outside the training loop (set-up, data loading) or a second Ctrl+C: stop at once.

    Not a KeyboardInterrupt, which Lightning turns into ``sys.exit(1)``; not an Exception, so
    nothing on the way catches it.
    """


@contextlib.contextmanager
def stop_signals(iteration: Callable[[], int]) -> Iterator[None]:
    """Around ``Trainer.fit``: a stop by a signal leaves as ``Interrupted``.

    While the training loop runs, the Interruption callback owns SIGINT (a clean stop at the
    next iteration boundary, saved) and Lightning owns SIGTERM (``SIGTERMException`` at the
    boundary, after the callback saved). Outside the loop Ctrl+C stops at once, unsaved.
    ``iteration`` reads the iteration count for the message.
    """

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        raise StopNow

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    except SIGTERMException:
        # Only without the Interruption callback: with it, the module's stop (saved) wins.
        raise Interrupted(
            f"SIGTERM at iteration {iteration()}: nothing saved (no Interruption callback; "
            "callbacks=default has one)",
            iteration(),
            "SIGTERM",
        ) from None
    except StopNow:
        raise Interrupted(
            f"SIGINT at iteration {iteration()}: stopped at once, nothing saved",
            iteration(),
            "SIGINT",
        ) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

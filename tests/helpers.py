"""Test-only callbacks, added to a run with ``+callbacks.<name>._target_=tests.helpers.<Class>``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class Throttle(Callback):
    """Writes the finished iteration to ``progress_file`` and sleeps ``seconds`` per iteration,
    so a test can signal a subprocess while it is part-way through its budget."""

    def __init__(self, progress_file: str, seconds: float = 0.0) -> None:
        self.progress_file = Path(progress_file)
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self.progress_file.write_text(str(pl_module.iteration))
        time.sleep(self.seconds)

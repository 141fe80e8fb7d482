"""What a run says: a quiet console without Lightning's boilerplate, a progress bar counted in
iterations with the latest losses, and the run's log in Hydra's ``<run dir>/train.log``."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightning_utilities.core import rank_zero

from gan_lab.console import quiet_lightning, run_log
from gan_lab.train import train
from tests.helpers import run_cli

# Small and quick, but with what makes Lightning talk: checkpoints (weights_only notice), an
# evaluation (val/primary) and the end of the budget (max_epochs notice).
TINY = [
    "experiment=ring_mlp",
    "data.batch_size=64",
    "model.g.hidden=[16]",
    "model.d.hidden=[16]",
    "train.iterations=6",
    "train.log_every=2",
    "train.checkpoint_every=3",
    "eval.every_n_iterations=3",
]
BOILERPLATE = (
    "💡 Tip",
    "weights_only",
    "`Trainer.fit` stopped",
    "TPU available",
    "Epoch 0/0",
    "LeafSpec",  # a library's deprecation warning (gan_lab.console.KNOWN_WARNINGS)
)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One real CLI run shared by the tests below: (stdout + stderr, run directory)."""
    run_dir = tmp_path_factory.mktemp("console_run")
    result = run_cli(*TINY, f"hydra.run.dir={run_dir}")
    return result.stdout + result.stderr, run_dir


def test_console_holds_no_lightning_boilerplate(cli_run: tuple[str, Path]) -> None:
    console, _ = cli_run
    assert not [line for line in console.splitlines() if line.strip().startswith("Epoch")]
    for text in BOILERPLATE:
        assert text not in console, text
    # The device line stays: it says where the run trains.
    assert "GPU available:" in console


def test_console_bar_counts_iterations_with_losses(cli_run: tuple[str, Path]) -> None:
    console, _ = cli_run
    assert re.search(r"iteration\b[^\n]*6/6", console), console
    assert "d_loss:" in console and "g_loss:" in console and "val/primary:" in console


def test_train_log_holds_the_run(cli_run: tuple[str, Path]) -> None:
    _, run_dir = cli_run
    log = (run_dir / "train.log").read_text()
    assert "training ring_mlp: MLPGenerator vs MLPDiscriminator" in log
    assert f"run directory {run_dir}" in log
    # Lightning's records reach it too, once each.
    assert log.count("GPU available:") == 1
    assert "run finished" in log and "final metrics : " in log and "val/primary=" in log


@pytest.mark.parametrize("bar", ["IterationRichProgressBar", "IterationTQDMProgressBar"])
def test_each_bar_counts_iterations_with_losses(make_config, capsys, bar: str) -> None:
    cfg = make_config(
        "experiment=ring_mlp",
        "data.batch_size=16",
        "train.iterations=4",
        "train.log_every=2",
        "eval=none",
        "trainer.enable_progress_bar=true",
        f"+callbacks.bar._target_=gan_lab.console.{bar}",
        "+callbacks.bar.every_n_iterations=2",
    )
    train(cfg)
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert re.search(r"iteration\b[^\n]*4/4", shown) and "Epoch" not in shown, shown
    assert "d_loss" in shown and "g_loss" in shown


@pytest.fixture
def info_level() -> Iterator[None]:
    """Lightning's and the root logger at INFO for one test, whatever an earlier test set (the
    toy benchmark's workers raise Lightning's loggers to ERROR in-process)."""
    loggers = [logging.getLogger(n) for n in ("", "lightning", "lightning.pytorch")]
    loggers.append(rank_zero.log)
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


def test_boilerplate_filter_drops_only_the_known_info_records(info_level) -> None:
    quiet_lightning()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    rank_zero.log.addHandler(handler)
    try:
        rank_zero.log.info("💡 Tip: For seamless cloud logging ...")
        rank_zero.log.info("`Trainer.fit` stopped: `max_epochs=1` reached.")
        rank_zero.log.info("GPU available: False, used: False")
        rank_zero.log.info("`Trainer.fit` stopped: `max_steps=5` reached.")
        rank_zero.log.warning("💡 Tip: a warning is never dropped")
    finally:
        rank_zero.log.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "GPU available: False, used: False",
        "`Trainer.fit` stopped: `max_steps=5` reached.",
        "💡 Tip: a warning is never dropped",
    ]


def test_run_log_sends_lightning_and_warnings_to_the_root_handlers(monkeypatch, info_level) -> None:
    # Lightning's own state when it is imported before logging is configured (as under Hydra).
    lightning_logger = logging.getLogger("lightning.pytorch")
    own, root_stream = io.StringIO(), io.StringIO()
    own_handler, root_handler = logging.StreamHandler(own), logging.StreamHandler(root_stream)
    monkeypatch.setattr(lightning_logger, "propagate", False)
    monkeypatch.setattr(lightning_logger, "handlers", [own_handler])
    root = logging.getLogger()
    root.addHandler(root_handler)
    try:
        with run_log(), warnings.catch_warnings():
            warnings.simplefilter("always")
            logging.getLogger("lightning.pytorch.core").info("from lightning")
            warnings.warn("a real warning", RuntimeWarning, stacklevel=1)
        logging.getLogger("lightning.pytorch.core").info("after the run")
    finally:
        root.removeHandler(root_handler)
    assert root_stream.getvalue().count("from lightning") == 1
    assert "a real warning" in root_stream.getvalue()
    assert "from lightning" not in own.getvalue()
    # Restored: Lightning's handler speaks again, the root's does not hear it.
    assert lightning_logger.handlers == [own_handler] and not lightning_logger.propagate
    assert "after the run" in own.getvalue() and "after the run" not in root_stream.getvalue()

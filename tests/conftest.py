"""Shared fixtures: compose the real Hydra configs into a temporary run directory; keep every
test inside its tmp_path, its caches and its own processes."""

from __future__ import annotations

import atexit
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gan_lab.config import CONF_DIR  # importing it registers the run schema
from tests import processes

ROOT = Path(__file__).resolve().parents[1]

# Tests never need a W&B account.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Caches and tool settings in a fresh directory per session, so the suite passes (and behaves) the
# same with or without a developer's ~/.cache, ~/.config/wandb or matplotlib font cache.
# Subprocesses inherit it.
_HOME = tempfile.mkdtemp(prefix="gan_lab-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
for _name, _sub in {
    "XDG_CACHE_HOME": "cache",
    "TORCH_HOME": "cache/torch",
    "MPLCONFIGDIR": "matplotlib",
    "WANDB_CONFIG_DIR": "wandb/config",
    "WANDB_CACHE_DIR": "wandb/cache",
    "WANDB_DATA_DIR": "wandb/data",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
}.items():
    os.environ[_name] = os.path.join(_HOME, _sub)

# Stopping a hung subprocess sends SIGABRT (for its stack dump); no core files from that.
resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose gan_lab/conf/train.yaml as the CLI would, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


# Quiet, quick runs: no progress bar, no logger, no callbacks unless a test asks for them.
QUICK = [
    "logger=none",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "train.iterations=2",
]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, quick: bool = True) -> DictConfig:
        return compose_config([*(QUICK if quick else []), *overrides], tmp_path)

    return _make


@pytest.fixture(autouse=True)
def _no_processes_left_behind() -> Iterator[None]:
    """A test that leaves a process group running fails, and the group is killed."""
    yield
    left = processes.stop_leftovers()
    if left:
        pytest.fail(f"the test left {len(left)} process group(s) running: {left}")


def _entries(*folders: Path) -> set[Path]:
    return {Path(entry.path) for folder in folders for entry in os.scandir(folder)}


@pytest.fixture(autouse=True)
def _writes_stay_in_tmp_path() -> Iterator[None]:
    """Nothing new in the checkout's top level or the working directory (outputs/, multirun/,
    wandb/, lightning_logs/ ...): a test writes under its tmp_path."""
    folders = {ROOT, Path.cwd()}
    before = _entries(*folders)
    yield
    new = sorted(str(p) for p in _entries(*folders) - before if p.name != ".pytest_cache")
    if new:
        pytest.fail(f"the test wrote outside its tmp_path: {new}")


def _git_status() -> set[str] | None:
    """The checkout's ignored paths (run dirs, wandb/, *.ckpt land there), and under CI also its
    changed and untracked ones; None outside a git checkout. A developer may edit files while
    the tests run; a CI checkout holds still."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--ignored"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    noise = ("__pycache__", ".pytest_cache", ".ruff_cache")
    watched = ("",) if os.environ.get("CI") in ("true", "1") else ("!!",)
    return {
        line
        for line in out.splitlines()
        if line.startswith(watched) and not any(n in line for n in noise)
    }


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STATUS_KEY] = _git_status()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if the tests changed the checkout anywhere (a rewritten docs file, a
    results JSON, a run dir): what the per-test check cannot see below the top level."""
    before = session.config.stash.get(_STATUS_KEY, None)
    after = _git_status()
    if before is None or after is None or after <= before:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = "\n".join(sorted(after - before))
    message = f"the tests changed the checkout (git status):\n{lines}"
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("!", "tests wrote outside tmp_path", red=True)
        reporter.write_line(message)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_STATUS_KEY = pytest.StashKey[set[str] | None]()

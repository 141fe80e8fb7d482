"""The test harness itself: a hanging test fails within seconds with the stack of the hang, the
session goes on, and no process outlives it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests import processes

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for a training run that starts a worker of its own (a DDP rank, a joblib worker)
# and then never returns.
FAKE_RUN = """
import subprocess, sys, time
from pathlib import Path

def train_forever():
    time.sleep(3600)

worker = subprocess.Popen(["sleep", "3600"])
Path(sys.argv[1]).write_text(f"{worker.pid}")
train_forever()
"""

INNER_TESTS = """
import os, sys, time
from pathlib import Path
import pytest
from tests import processes
from tests.test_ci_harness import assert_gone

PIDS = Path(os.environ["PIDS"])

def wait_for_a_collective():
    time.sleep(3600)

@pytest.mark.timeout(5)
def test_hangs_in_the_test_process():
    wait_for_a_collective()

@pytest.mark.timeout(5)
def test_hangs_on_a_training_subprocess():
    processes.run([sys.executable, os.environ["FAKE_RUN"], str(PIDS / "worker")], timeout=60)

def test_the_session_goes_on_and_the_worker_is_gone():
    # Runs after the hangs (file order): the hung run's own child did not outlive its test.
    assert_gone(int((PIDS / "worker").read_text()))
"""


def run_inner_pytest(tmp_path: Path, source: str, *options: str):
    """pytest on ``source`` with the project's pytest settings (pyproject.toml), not its
    conftest; returns (result, seconds)."""
    (tmp_path / "test_inner.py").write_text(source)
    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    (tmp_path / "pids").mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PIDS": str(tmp_path / "pids"),
        "FAKE_RUN": str(tmp_path / "fake_run.py"),
    }
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml")]
    command += ["--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-p", "no:randomly"]
    command += [*options, str(tmp_path / "test_inner.py")]
    start = time.monotonic()
    result = processes.run(command, timeout=90, check=False, cwd=tmp_path, env=env)
    return result, time.monotonic() - start


def assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived its test"


def test_a_hang_fails_within_seconds_with_its_stack_and_no_process_left(tmp_path):
    result, seconds = run_inner_pytest(tmp_path, INNER_TESTS)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "2 failed, 1 passed" in output, output[-3000:]
    assert seconds < 45, seconds  # two 5 s timeouts, a 5 s grace for the dump, start-up
    assert output.count("Timeout (>5.0s) from pytest-timeout") >= 2
    # The stack of the hang in the test process, and that of the hung subprocess (faulthandler
    # in the child, triggered by the SIGABRT that stops its group).
    assert "wait_for_a_collective()" in output
    assert "Fatal Python error: Aborted" in output and "in train_forever" in output


BLOCKED = """
import signal, time
import pytest

def stuck_in_c_code():
    time.sleep(3600)

@pytest.mark.timeout(2)
def test_sigalrm_cannot_reach_python():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    stuck_in_c_code()
"""


def test_a_hang_sigalrm_cannot_interrupt_ends_the_session_with_every_stack(tmp_path):
    # The backstop (faulthandler_timeout, 660 s in pyproject.toml) shortened to 4 s here.
    result, seconds = run_inner_pytest(tmp_path, BLOCKED, "-o", "faulthandler_timeout=4")
    assert result.returncode != 0
    assert seconds < 30, seconds
    assert "Timeout (0:00:04)!" in result.stderr, result.stderr[-3000:]
    assert "in stuck_in_c_code" in result.stderr


def readme_test_commands() -> list[str]:
    """The command lines of the README's "Testing" section, as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Testing", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("   #", 1)[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.skipif(
    not (ROOT / ".venv" / ".installed").is_file(), reason="needs the venv of `make setup`"
)
def test_readme_commands_for_one_test_run_as_written(tmp_path):
    commands = readme_test_commands()
    assert len(commands) == 3 and commands[0].startswith("make test ARGS=")
    for command in commands:
        result = processes.run(["bash", "-c", command], timeout=100, cwd=ROOT, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\n{output[-3000:]}"
        assert " passed" in output and "failed" not in output, f"{command}\n{output[-3000:]}"
        if command.startswith("make test"):
            assert "random order SEED=" in output and "slowest 15 durations" in output

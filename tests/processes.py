"""Subprocesses for tests, each in its own process group, killed with it.

A training run, a sweep or a DDP launch starts children of its own (ranks, joblib workers), so
killing the direct child is not enough: a rank left behind keeps a port, a lock or a CPU for the
rest of the session. Every process a test starts goes through ``spawn`` (or ``run``), which puts
it at the head of a new session; ``stop`` ends the whole group, and the autouse fixture in
conftest stops any group a test left running and fails that test.

The children run with ``PYTHONFAULTHANDLER=1``, so ``stop`` first sends SIGABRT: every Python
process of a hung run prints its stack before it dies, and that output ends up in the failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

# Groups started by spawn() and not yet stopped; checked after every test.
_LIVE: list[subprocess.Popen] = []

# How long a process group gets to write its stacks after SIGABRT before SIGKILL.
DUMP_GRACE_S = 5.0


def spawn(command: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(command)`` as the head of a new process group, tracked until stopped."""
    env = {**(popen_kwargs.pop("env", None) or os.environ), "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(list(command), env=env, start_new_session=True, **popen_kwargs)
    _LIVE.append(process)
    return process


def group_alive(process: subprocess.Popen) -> bool:
    """Whether any process of ``process``'s group is still running (zombies do not count)."""
    try:
        os.killpg(process.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not os.path.isdir("/proc"):
        return True
    # killpg(0) succeeds while an unreaped zombie holds the group id; reap ours and look again.
    process.poll()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            state, _, pgid = stat.rsplit(")", 1)[1].split()[:3]  # after "pid (comm)"
            if int(pgid) == process.pid and state != "Z":
                return True
    return False


def stop(process: subprocess.Popen) -> str:
    """End ``process`` and every process of its group; return what it wrote to pipes meanwhile.

    SIGABRT first, so Python processes dump their stacks (faulthandler), then SIGKILL for
    whatever is left. Safe to call on a group that already ended.
    """
    output = ""
    if process in _LIVE:
        _LIVE.remove(process)
    if group_alive(process):
        _signal_group(process, signal.SIGABRT)
        try:
            streams = process.communicate(timeout=DUMP_GRACE_S)
            output = "".join(_text(stream) for stream in streams)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass
        _signal_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=DUMP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # Grandchildren are reaped by init once their parent is gone; give that a moment.
    deadline = time.monotonic() + DUMP_GRACE_S
    while group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    return output


def communicate(process: subprocess.Popen, timeout: float) -> tuple[Any, Any]:
    """``process.communicate(timeout=timeout)``, then its group is stopped (children it left).

    On expiry (or on any exception, a pytest-timeout included) the group is stopped first and
    the test fails with the end of what the processes printed, their stacks included.
    """
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        dump = stop(process)
        command = " ".join(map(str, process.args))[:300]
        pytest.fail(f"{command}\ntimed out after {timeout} s:\n{dump[-6000:]}")
    except BaseException:
        print(stop(process)[-6000:])  # captured and shown with the failure
        raise
    stop(process)
    return out, err


def run(
    command: Sequence[str], timeout: float, check: bool = True, **popen_kwargs: Any
) -> subprocess.CompletedProcess:
    """Run ``command`` to completion in its own process group, capturing text output; see
    ``communicate`` for expiry. With ``check`` a non-zero exit fails the test with the end of
    stderr."""
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    process = spawn(command, text=True, **popen_kwargs)
    out, err = communicate(process, timeout)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    if check:
        assert result.returncode == 0, (err or "")[-3000:]
    return result


def stop_leftovers() -> list[str]:
    """Stop every group still tracked; return their commands (empty when a test cleaned up)."""
    left = []
    for process in list(_LIVE):
        if group_alive(process):
            left.append(" ".join(map(str, process.args))[:200])
        stop(process)
    return left


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

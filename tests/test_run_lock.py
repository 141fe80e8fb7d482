"""The run dir lock: one live owner at a time, a stale lock taken over, the heartbeat."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from gan_lab.errors import UserError
from gan_lab.run_lock import (
    LOCK_FILE,
    UNREADABLE_PID,
    LockOwner,
    RunDirInUse,
    RunLock,
)
from tests import processes

ROOT = Path(__file__).resolve().parents[1]
OTHER_HOST = "some-other-host.invalid"


def write_lock(run_dir: Path, pid: int, host: str, slurm_job_id: str | None = None) -> LockOwner:
    """A lock file as another process would have written it; returns its owner."""
    owner = LockOwner(
        pid, host, "2026-12-06T12:00:01.000000Z", "python -m gan_lab.train", slurm_job_id
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps(asdict(owner)))
    return owner


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s mtime ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    result = processes.run([sys.executable, "-c", "import os; print(os.getpid())"], timeout=30)
    return int(result.stdout)


def test_acquire_on_a_free_dir_writes_us_and_release_removes_it(tmp_path):
    run_dir = tmp_path / "not" / "yet" / "there"
    lock = RunLock(run_dir, heartbeat_s=0)

    assert lock.acquire() is None
    owner = RunLock.read_owner(run_dir / LOCK_FILE)
    assert lock.path == run_dir / LOCK_FILE
    assert (owner.pid, owner.host) == (os.getpid(), socket.gethostname())
    assert owner == lock.owner

    lock.release()
    assert not lock.path.exists()
    lock.release()  # twice is fine
    assert RunLock.read_owner(lock.path) is None


def test_release_leaves_a_lock_another_owner_wrote_meanwhile(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0)
    lock.acquire()
    theirs = write_lock(tmp_path, 4242, OTHER_HOST)

    lock.release()

    assert RunLock.read_owner(lock.path) == theirs


def test_context_manager_holds_the_lock_inside_only(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0) as lock:
        assert lock.path.exists()
    assert not lock.path.exists()


def test_a_held_dir_is_refused_naming_the_owner_and_the_lock_file(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0) as first:
        second = RunLock(tmp_path, heartbeat_s=0)
        with pytest.raises(RunDirInUse) as refused:
            second.acquire()
        assert first.path.exists()
    message = str(refused.value)
    assert isinstance(refused.value, UserError)
    assert "\n" not in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert str(tmp_path / LOCK_FILE) in message
    assert second.owner is None
    second.release()  # a refused lock releases nothing


def test_a_dead_process_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    stale = write_lock(tmp_path, dead_pid(), socket.gethostname())

    with caplog.at_level(logging.WARNING, logger="gan_lab.run_lock"):
        lock = RunLock(tmp_path, heartbeat_s=0)
        taken_over = lock.acquire()

    assert taken_over == stale
    assert RunLock.read_owner(lock.path).pid == os.getpid()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"pid {stale.pid}" in warnings[0].getMessage()
    lock.release()
    assert not lock.path.exists()
    # The renamed stale lock and the temporary file are gone too.
    assert list(tmp_path.iterdir()) == []


def test_a_live_process_on_this_host_keeps_its_lock(tmp_path):
    write_lock(tmp_path, os.getppid(), socket.gethostname())

    with pytest.raises(RunDirInUse, match=f"pid {os.getppid()} "):
        RunLock(tmp_path, heartbeat_s=0).acquire()


def test_a_lock_of_this_very_process_that_no_runlock_holds_is_a_leftover(tmp_path):
    # As after a run in this process that never released, or the program this process exec'd.
    leftover = write_lock(tmp_path, os.getpid(), socket.gethostname())

    lock = RunLock(tmp_path, heartbeat_s=0)
    assert lock.acquire() == leftover
    assert RunLock.read_owner(lock.path) == lock.owner != leftover
    lock.release()


def test_a_claim_left_by_a_taker_that_died_mid_takeover_expires(tmp_path):
    stale = write_lock(tmp_path, dead_pid(), socket.gethostname())
    digest = hashlib.sha256((tmp_path / LOCK_FILE).read_bytes()).hexdigest()[:16]
    claim = tmp_path / f".{LOCK_FILE}.takeover.{digest}"
    claim.write_text("{}")
    age(claim, 60)

    lock = RunLock(tmp_path, heartbeat_s=0)
    assert lock.acquire() == stale
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_another_host_holds_the_dir_until_its_heartbeat_stops(tmp_path):
    stale = write_lock(tmp_path, 4242, OTHER_HOST)
    lock = RunLock(tmp_path, heartbeat_s=0, stale_after_s=300)

    with pytest.raises(RunDirInUse, match=re.escape(f"pid 4242 on host {OTHER_HOST}")):
        lock.acquire()

    age(lock.path, 301)
    assert lock.acquire() == stale
    lock.release()


def test_a_requeued_slurm_job_takes_over_its_earlier_incarnation(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    earlier = write_lock(tmp_path, 4242, OTHER_HOST, slurm_job_id="777")  # touched just now

    lock = RunLock(tmp_path, heartbeat_s=0)
    assert lock.acquire() == earlier
    assert RunLock.read_owner(lock.path) == lock.owner
    assert lock.owner.slurm_job_id == "777"
    lock.release()


def test_another_slurm_job_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    write_lock(tmp_path, 4242, OTHER_HOST, slurm_job_id="778")

    with pytest.raises(RunDirInUse, match="SLURM job 778"):
        RunLock(tmp_path, heartbeat_s=0).acquire()


def test_a_live_sibling_of_our_slurm_job_on_this_host_is_refused(tmp_path, monkeypatch):
    # Another rank or step of this same job, alive: not an earlier incarnation.
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    write_lock(tmp_path, os.getppid(), socket.gethostname(), slurm_job_id="777")

    with pytest.raises(RunDirInUse):
        RunLock(tmp_path, heartbeat_s=0).acquire()


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage {", b'{"pid": "12"}', b"[1, 2]"])
def test_an_unreadable_lock_is_stale_once_it_is_not_being_written(tmp_path, content):
    path = tmp_path / LOCK_FILE
    path.write_bytes(content)
    assert RunLock.read_owner(path).pid == UNREADABLE_PID

    # Just written, it may be a lock being filled in (where there are no hard links).
    with pytest.raises(RunDirInUse, match="unreadable lock file"):
        RunLock(tmp_path, heartbeat_s=0).acquire()

    age(path, 10)
    lock = RunLock(tmp_path, heartbeat_s=0)
    assert lock.acquire().pid == UNREADABLE_PID
    assert RunLock.read_owner(path).pid == os.getpid()
    lock.release()


def heartbeats(run_dir: Path) -> list[threading.Thread]:
    """The live heartbeat threads of locks on ``run_dir``."""
    return [t for t in threading.enumerate() if "heartbeat" in t.name and str(run_dir) in t.name]


def test_the_heartbeat_keeps_the_lock_fresh_and_stops_on_release(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.05)
    lock.acquire()
    age(lock.path, 1000)
    past = lock.path.stat().st_mtime

    time.sleep(0.3)

    assert lock.path.stat().st_mtime > past + 900
    [thread] = heartbeats(tmp_path)
    assert thread.daemon
    lock.release()
    assert not thread.is_alive()
    assert heartbeats(tmp_path) == []


def test_no_heartbeat_thread_with_heartbeat_0(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0):
        assert heartbeats(tmp_path) == []


def test_the_owner_record(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gan-train", "x=" + "1" * 500])
    monkeypatch.setenv("SLURM_JOB_ID", "31337")
    owner = LockOwner.of_this_process()

    started = datetime.datetime.fromisoformat(owner.started)
    assert started.utcoffset() == datetime.timedelta(0)
    assert abs(started.timestamp() - time.time()) < 60
    assert owner.command.startswith("gan-train x=111") and len(owner.command) <= 200
    assert owner.slurm_job_id == "31337"
    described = owner.describe()
    assert described.startswith(f"pid {os.getpid()} on host {socket.gethostname()} since ")
    assert "SLURM job 31337" in described


def test_a_forked_child_releasing_leaves_the_parents_lock(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0) as lock:
        pid = os.fork()
        if pid == 0:  # the child, as a DataLoader worker that runs the parent's cleanup
            lock.release()
            os._exit(0)
        os.waitpid(pid, 0)
        assert RunLock.read_owner(lock.path) == lock.owner


RACER = """
import os, sys, time
from pathlib import Path
from gan_lab.run_lock import RunDirInUse, RunLock
run_dir, go, stop, result = map(Path, sys.argv[1:])
while not go.exists():
    time.sleep(0.001)
lock = RunLock(run_dir, heartbeat_s=0)
try:
    lock.acquire()
    outcome = "ok"
except RunDirInUse:
    outcome = "in use"
result.with_suffix(".tmp").write_text(outcome)
os.replace(result.with_suffix(".tmp"), result)  # the test never reads it half-written
while not stop.exists():  # the winner holds the lock until both have tried
    time.sleep(0.005)
lock.release()
"""


def test_of_two_processes_acquiring_at_once_exactly_one_wins(tmp_path):
    go, stop = tmp_path / "go", tmp_path / "stop"
    results = [tmp_path / f"result{i}" for i in range(2)]
    racers = [
        processes.spawn(
            [sys.executable, "-c", RACER, str(tmp_path / "run"), str(go), str(stop), str(r)],
            cwd=ROOT,
        )
        for r in results
    ]
    try:
        time.sleep(0.2)  # both started and polling, so both see `go` within a millisecond
        go.touch()
        deadline = time.monotonic() + 20
        while not all(r.exists() for r in results) and time.monotonic() < deadline:
            time.sleep(0.01)
        outcomes = sorted(r.read_text() for r in results if r.exists())
        stop.touch()
        for racer in racers:
            processes.communicate(racer, timeout=20)
    finally:
        for racer in racers:
            processes.stop(racer)
    assert outcomes == ["in use", "ok"]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def race(run_dir: Path, n: int) -> list[str]:
    """``n`` threads acquire ``run_dir`` at once; each one's outcome, "ok" or "in use"."""
    start = threading.Barrier(n, timeout=10)
    outcomes: list[str] = []
    locks = [RunLock(run_dir, heartbeat_s=0) for _ in range(n)]

    def racer(lock: RunLock) -> None:
        start.wait()
        try:
            lock.acquire()
            outcomes.append("ok")
        except RunDirInUse:
            outcomes.append("in use")

    threads = [threading.Thread(target=racer, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    for lock in locks:
        lock.release()
    return sorted(outcomes)


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_of_many_threads_acquiring_at_once_exactly_one_wins(tmp_path, stale):
    # Many rounds: the interleavings that would let two takers of one stale lock both win are
    # microseconds wide (without the takeover claim, most runs of this test fail).
    pid = dead_pid()
    for round_ in range(20):
        run_dir = tmp_path / str(round_)
        if stale:
            write_lock(run_dir, pid, socket.gethostname())

        assert race(run_dir, 8) == ["in use"] * 7 + ["ok"], f"round {round_}"
        assert list(run_dir.iterdir()) == []  # no lock, claim, stale or temporary file left

"""A lock file per run directory, so that two training processes never write into one run dir.

The process that trains in a run dir holds ``<run dir>/gan_lab.lock`` (JSON naming its pid,
host, start time, command and SLURM job) and touches it every ``heartbeat_s`` seconds; another
process refuses the dir while that owner is alive, and takes the lock over once the owner is
provably gone (a dead pid on this host, a silent lock from another host, a requeued SLURM job).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from lightning.pytorch.utilities import rank_zero_only

from gan_lab.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "gan_lab.lock"

# The pid of the owner read_owner returns for an empty or corrupt lock file.
UNREADABLE_PID = -1

# An unreadable lock younger than this may be one being written right now: only where os.link
# is unsupported is the lock created empty (O_EXCL) and filled a moment later.
UNREADABLE_GRACE_S = 2.0

# How long acquire keeps trying while the lock keeps changing under it (a crowd of processes
# starting on one dir) before it gives up with RunDirInUse.
_CONTENDED_S = 10.0

# A takeover takes milliseconds; a claim on one older than this was left by a process that died
# in the middle of it. How often a process waiting for another's takeover looks again.
_CLAIM_ABANDONED_S = 5.0
_CLAIM_POLL_S = 0.01

_COMMAND_CHARS = 200


class RunDirInUse(UserError):
    """Another live process holds the run dir's lock: ``owner`` (None while the lock keeps
    changing hands)."""

    def __init__(self, message: str, owner: LockOwner | None = None) -> None:
        super().__init__(message)
        self.owner = owner


@dataclass
class LockOwner:
    """Who holds a run dir's lock: the content of ``gan_lab.lock``.

    An empty or corrupt lock file reads as an owner with ``pid == UNREADABLE_PID`` (-1), empty
    ``host`` and ``started``, and the reason in ``command``.
    """

    pid: int
    host: str
    started: str
    command: str
    slurm_job_id: str | None

    def describe(self) -> str:
        """One line for messages, e.g. ``pid 1234 on host node7 since <UTC time> (<command>)``."""
        if self.pid == UNREADABLE_PID:
            return f"an unreadable lock file ({self.command})"
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        return f"pid {self.pid} on host {self.host} since {self.started}{job} ({self.command})"

    @classmethod
    def of_this_process(cls) -> LockOwner:
        """This process, starting now."""
        # Microseconds: `started` tells apart two locks one process took within a second.
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        command = " ".join(sys.argv)
        if len(command) > _COMMAND_CHARS:
            command = command[: _COMMAND_CHARS - 3] + "..."
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=now,
            command=command,
            slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        )

    def _key(self) -> tuple[str, int, str]:
        return (self.host, self.pid, self.started)


# The RunLocks this process holds now, by their owner's key. A lock file with our own pid is
# live only if it is one of these; otherwise an earlier run in this process (or the program
# this process exec'd from) left it behind. Weak, so a RunLock dropped without release (a test
# that crashed) stops counting once it is collected.
_HELD: weakref.WeakValueDictionary[tuple[str, int, str], RunLock] = weakref.WeakValueDictionary()
_HELD_LOCK = threading.Lock()


def is_stale(owner: LockOwner, lock_mtime: float, now: float, stale_after_s: float) -> bool:
    """Whether the lock ``owner`` wrote (last touched at ``lock_mtime``) may be taken over.

    - unreadable (``pid == UNREADABLE_PID``): stale once ``UNREADABLE_GRACE_S`` old;
    - this host, this process: stale unless a RunLock of this process holds it now;
    - this host, another pid: stale when that pid is not running (a live pid with our
      SLURM job id is a sibling rank or step of this job, not a previous incarnation);
    - another host with our SLURM job id: stale (this job was requeued; its earlier run is dead);
    - another host otherwise: stale when not touched for ``stale_after_s`` (its heartbeat
      stopped); the hosts' clocks must agree to well within that.
    """
    if owner.pid == UNREADABLE_PID:
        return now - lock_mtime >= UNREADABLE_GRACE_S
    if owner.host == socket.gethostname():
        if owner.pid == os.getpid():
            with _HELD_LOCK:
                return owner._key() not in _HELD
        return not _pid_running(owner.pid)
    job = os.environ.get("SLURM_JOB_ID")
    if owner.slurm_job_id and owner.slurm_job_id == job:
        return True
    return now - lock_mtime > stale_after_s


class RunLock:
    """Exclusive ownership of one run dir for the life of a process's run.

    ``with RunLock(run_dir):`` or ``acquire()`` ... ``release()``. Hold it in the one process
    that owns the run (global rank 0): every other rank on this host would find it in use, and
    on another host with the same SLURM job id would take it over.
    """

    def __init__(
        self, run_dir: str | Path, heartbeat_s: float = 30.0, stale_after_s: float = 300.0
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._owner: LockOwner | None = None
        self._content = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def owner(self) -> LockOwner | None:
        """What this lock wrote while it is held; None before acquire and after release."""
        return self._owner

    def acquire(self) -> LockOwner | None:
        """Take the run dir: return the stale owner taken over, or None when the dir was free.

        Raises RunDirInUse naming the live owner otherwise.
        """
        if self._owner is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        owner = LockOwner.of_this_process()
        content = json.dumps(asdict(owner), indent=1).encode() + b"\n"
        # Registered before the lock exists: a thread of this process that reads it must
        # already see it as held, or it would count our own pid as a leftover.
        with _HELD_LOCK:
            _HELD[owner._key()] = self
        try:
            taken_over = self._create(content)
        except BaseException:
            with _HELD_LOCK:
                _HELD.pop(owner._key(), None)
            raise
        self._owner, self._content = owner, content
        if taken_over is not None:
            log.warning("%s: took over the stale lock of %s", self.path, taken_over.describe())
        if self.heartbeat_s > 0:
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_heartbeat,
                args=(self.path, self._stop, self.heartbeat_s),
                name=f"gan_lab-run-lock-heartbeat({self.run_dir})",
                daemon=True,
            )
            self._thread.start()
            # A RunLock dropped without release stops beating; the thread holds no reference
            # to self, so it does not keep it alive.
            weakref.finalize(self, self._stop.set)
        return taken_over

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours. Idempotent.

        A forked child (a DataLoader worker) that calls it leaves its parent's lock alone.
        """
        if self._owner is not None and self._owner.pid != os.getpid():
            return  # a forked child: the lock and its heartbeat are the parent's
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        owner, self._owner = self._owner, None
        if owner is None:
            return
        with _HELD_LOCK:
            _HELD.pop(owner._key(), None)
        try:
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass  # removed by hand, or taken over after all: nothing of ours to remove

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    @staticmethod
    def read_owner(path: str | Path) -> LockOwner | None:
        """The owner recorded in the lock file ``path``; None if there is none.

        An empty or corrupt file reads as ``LockOwner(pid=UNREADABLE_PID, ...)`` (see
        LockOwner), which ``is_stale`` counts as stale.
        """
        found = _read(Path(path))
        return None if found is None else found[1]

    def _create(self, content: bytes) -> LockOwner | None:
        """Make ``self.path`` hold ``content``; return the stale owner replaced, if any."""
        taken_over = None
        deadline = time.monotonic() + _CONTENDED_S
        while time.monotonic() < deadline:
            if _create_exclusive(self.path, content):
                return taken_over
            found = _read(self.path)
            if found is None:
                continue  # released or taken over since our create: try again
            data, owner, mtime = found
            if not is_stale(owner, mtime, time.time(), self.stale_after_s):
                raise RunDirInUse(self._in_use_message(owner), owner)
            claim = _claim_takeover(self.path, data, content)
            if claim is None:
                time.sleep(_CLAIM_POLL_S)  # another process is taking it over right now
                continue
            try:
                # Read again under the claim: a process that read the same stale lock a while
                # ago may come here after another took it over and wrote its own.
                again = _read(self.path)
                if again is not None and again[0] == data and _remove_if_unchanged(self.path, data):
                    taken_over = owner
                    if _create_exclusive(self.path, content):
                        return taken_over
            finally:
                claim.unlink(missing_ok=True)
        raise RunDirInUse(f"{self.run_dir} is contended: {self.path} keeps changing; try again")

    def _in_use_message(self, owner: LockOwner) -> str:
        return (
            f"{self.run_dir} is in use by {owner.describe()}: two runs must not write into one "
            f"run dir; wait for it to end, or pick another hydra.run.dir (if that process is "
            f"gone, delete {self.path})"
        )


def _create_exclusive(path: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content`` unless it exists; whether we created it.

    A hard link from a finished temporary file, so that the lock never exists half-written
    (and because O_EXCL is unreliable on old NFS); O_EXCL then write where links are missing.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        pass
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return True


def _claim_takeover(path: Path, data: bytes, content: bytes) -> Path | None:
    """Claim the right to take over the stale lock ``path`` holding ``data``: the claim file,
    or None if another process holds it.

    Only the claimant of a stale lock may remove it, so of the processes that judged one stale
    lock stale together exactly one replaces it. The claim is named after the stale content,
    so it blocks nobody once that lock is gone; it holds the claimant's ``content``.
    """
    digest = hashlib.sha256(data).hexdigest()[:16]
    claim = path.with_name(f".{path.name}.takeover.{digest}")
    if _create_exclusive(claim, content):
        return claim
    try:
        if time.time() - claim.stat().st_mtime > _CLAIM_ABANDONED_S:
            claim.unlink()  # its claimant died mid-takeover; the next round claims it anew
    except FileNotFoundError:
        pass
    return None


def _remove_if_unchanged(path: Path, data: bytes) -> bool:
    """Remove the lock ``path`` if it still holds ``data``; whether it did.

    Called under the takeover claim, so no other process replaces the stale lock meanwhile;
    but its owner, misjudged stale, may still release it and a new one appear between our read
    and this removal. So it is renamed aside and checked there, and a lock that is not the stale
    one goes back.
    """
    aside = path.with_name(f".{path.name}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if aside.read_bytes() == data:
            return True
        try:
            os.link(aside, path)
        except FileExistsError:
            # A third process created the lock in the moment it was aside: it owns the dir
            # now, and the owner we moved is left without its file (its release is a no-op).
            log.error("%s: a live lock was displaced during a takeover race", path)
        return False
    finally:
        aside.unlink(missing_ok=True)


def _read(path: Path) -> tuple[bytes, LockOwner, float] | None:
    """``(content, owner, mtime)`` of the lock file, or None if there is none."""
    try:
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime  # of the very file whose content we read
            data = f.read()
    except FileNotFoundError:
        return None
    return data, _parse(data), mtime


def _parse(data: bytes) -> LockOwner:
    """The owner in a lock file's content; an UNREADABLE_PID owner saying why if it is bad."""
    try:
        fields = json.loads(data)
        owner = LockOwner(
            pid=fields["pid"],
            host=fields["host"],
            started=fields["started"],
            command=fields["command"],
            slurm_job_id=fields.get("slurm_job_id"),
        )
    except (ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
        reason = "empty" if not data.strip() else f"not a gan_lab lock: {error}"
        return LockOwner(UNREADABLE_PID, "", "", reason, None)
    valid = (
        type(owner.pid) is int
        and owner.pid > 0  # os.kill(0 or a negative pid) would signal process groups
        and all(isinstance(v, str) for v in (owner.host, owner.started, owner.command))
        and isinstance(owner.slurm_job_id, str | None)
    )
    if not valid:
        return LockOwner(UNREADABLE_PID, "", "", "not a gan_lab lock: bad field types", None)
    return owner


def _pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie not yet reaped counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _heartbeat(path: Path, stop: threading.Event, interval: float) -> None:
    """Touch ``path`` every ``interval`` seconds until ``stop`` is set: the mtime is how a
    process on another host tells a live owner from a dead one."""
    while not stop.wait(interval):
        try:
            os.utime(path)
        except OSError:
            pass  # the lock was removed (by hand, or the dir deleted): nothing to keep fresh


def claim_run_dir(run_dir: str | Path) -> AbstractContextManager[object]:
    """``with claim_run_dir(run_dir):`` around a run: its RunLock in the process that owns the
    run, global rank 0. The other DDP ranks, which Lightning starts with their rank in the
    environment, run inside rank 0's lock and take none."""
    if rank_zero_only.rank != 0:
        return nullcontext()
    return RunLock(run_dir)

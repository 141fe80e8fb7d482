"""A full disk while writing a checkpoint: one line saying so, the previous checkpoint kept,
last.ckpt written before the periodic and best copies, no temporary files left behind.

The full disk is simulated (no root needed): ``FakeDisk.save`` stands in for ``torch.save`` and
raises ENOSPC from the file's ``write`` once its room is used up, as ``write(2)`` does; torch
turns that into the same ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected
pos`` seen on a real full disk. A test marked slow checks once on a real tiny tmpfs.
"""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_lab import checkpoint_io
from gan_lab.checkpoint_io import atomic_torch_save, load_checkpoint_file
from gan_lab.errors import DiskFullError, UserError, find_user_error
from gan_lab.train import fit
from tests import processes
from tests.test_resume import TOY as RESUME_TOY

ROOT = Path(__file__).resolve().parents[1]
# test_resume's tiny ring run (later overrides win), with checkpoints at 3 and 6.
TOY = [
    *RESUME_TOY,
    "train.iterations=6",
    "train.log_every=10",
    "train.checkpoint_every=3",
    "callbacks=default",
    "eval=none",
]


class FakeDisk:
    """Stands in for ``torch.save``; the bytes it writes count against the room left on disk,
    and a write that does not fit raises ``OSError(code)`` as ``write(2)`` does.

    ``left``: bytes of room from the start. ``full_from``/``room``: from the first save of that
    iteration on, room for ``room`` more checkpoints of the size of the last one written.
    """

    def __init__(
        self,
        left: float = math.inf,
        *,
        full_from: int | None = None,
        room: float = 0.0,
        code: int = errno.ENOSPC,
    ) -> None:
        self.left, self.full_from, self.room, self.code = left, full_from, room, code
        self.last_size = 0
        self.real_save = torch.save

    def save(self, obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as file:
                return self.save(obj, file, *args, **kwargs)
        iteration = obj.get("gan_lab", {}).get("iteration") if isinstance(obj, dict) else None
        if self.full_from is not None and iteration is not None and iteration >= self.full_from:
            self.left, self.full_from = self.room * self.last_size, None
        writes = _Writes(f, self)
        self.real_save(obj, writes, *args, **kwargs)
        self.last_size = writes.written


class _Writes:
    def __init__(self, file: Any, disk: FakeDisk) -> None:
        self.file, self.disk, self.written = file, disk, 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if size > self.disk.left:
            raise OSError(self.disk.code, os.strerror(self.disk.code))
        self.disk.left -= size
        self.written += size
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


# --- atomic_torch_save ---------------------------------------------------------------------


def _raise(code: int) -> Any:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    "where, code",
    [
        ("write", errno.ENOSPC),  # torch.save raises RuntimeError, ENOSPC in its __context__
        ("write", errno.EDQUOT),
        ("fsync", errno.ENOSPC),
        ("replace", errno.ENOSPC),
    ],
)
def test_disk_full_keeps_the_old_file_and_says_so(where, code, tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    old = {"w": torch.arange(10.0)}
    atomic_torch_save(old, path)
    if where == "write":
        monkeypatch.setattr(torch, "save", FakeDisk(left=1000, code=code).save)
    else:
        monkeypatch.setattr(os, where, _raise(code))
    with pytest.raises(DiskFullError) as error:
        atomic_torch_save({"w": torch.zeros(100_000)}, path)
    message = str(error.value)
    assert message.startswith(f"disk full while writing {path}"), message
    assert "previous last.ckpt is kept" in message and "free space" in message, message
    assert isinstance(error.value, OSError) and error.value.errno == code
    assert isinstance(error.value, UserError) and error.value.exit_code == 1
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["w"], old["w"])
    assert temp_files(tmp_path) == []  # the partial file's space is freed


def test_disk_full_on_a_new_file_says_nothing_was_kept(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(torch, "save", FakeDisk(left=100).save)
    with pytest.raises(DiskFullError, match="no last.ckpt was written"):
        atomic_torch_save({"w": torch.zeros(1000)}, path)
    assert not path.exists() and temp_files(path.parent) == []


def test_other_errors_are_not_disk_full(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _raise(errno.EIO))
    with pytest.raises(OSError) as error:
        atomic_torch_save({"w": torch.zeros(3)}, tmp_path / "last.ckpt")
    assert not isinstance(error.value, DiskFullError) and error.value.errno == errno.EIO
    assert temp_files(tmp_path) == []


def test_link_or_copy_shares_the_file_or_copies_it(tmp_path, monkeypatch):
    source = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.arange(4.0)}, source)
    checkpoint_io.link_or_copy(source, tmp_path / "iter_0000003.ckpt")
    assert os.path.samefile(source, tmp_path / "iter_0000003.ckpt")  # a hard link: no new space
    monkeypatch.setattr(os, "link", _raise(errno.EPERM))  # a filesystem without hard links
    checkpoint_io.link_or_copy(source, tmp_path / "best.ckpt")
    assert not os.path.samefile(source, tmp_path / "best.ckpt")
    assert torch.equal(torch.load(tmp_path / "best.ckpt")["w"], torch.arange(4.0))
    monkeypatch.setattr(os, "link", _raise(errno.ENOSPC))
    with pytest.raises(DiskFullError, match="iter_0000006.ckpt"):
        checkpoint_io.link_or_copy(source, tmp_path / "iter_0000006.ckpt")
    assert temp_files(tmp_path) == []


# --- stale temporary files -----------------------------------------------------------------

STALE = [".last.ckpt.abc123.tmp", ".iter_0000003.ckpt.k2j4_5g6.tmp", ".best.ckpt.x8y9z0ab.tmp"]
KEPT = [
    "notes.txt",
    "last.ckpt.abc123.tmp",  # no leading dot
    ".last.ckpt.abc123.tmp.bak",
    ".last.ckpt.ab.c1.tmp",  # a dot in the random part
    ".last.ckpt.ABC123.tmp",  # mkstemp's names are lower case
    ".notes.abc123.tmp",  # not a checkpoint's
    ".last.ckpt..tmp",
]


def plant(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in STALE + KEPT:
        (folder / name).write_bytes(b"partial")
    (folder / ".last.ckpt.dir12345.tmp").mkdir()  # a folder is never removed


def test_remove_stale_temp_files_matches_only_the_temp_pattern(tmp_path):
    plant(tmp_path)
    assert sorted(checkpoint_io.remove_stale_temp_files(tmp_path)) == sorted(
        tmp_path / n for n in STALE
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*KEPT, ".last.ckpt.dir12345.tmp"])
    assert checkpoint_io.remove_stale_temp_files(tmp_path / "missing") == []


def test_run_start_removes_stale_temp_files(make_config, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    plant(checkpoints)
    plant(tmp_path / "elsewhere")
    fit(make_config(*TOY, "train.iterations=3", "ckpt_path=last"))
    names = {p.name for p in checkpoints.iterdir()}
    assert not names & set(STALE), names
    assert set(KEPT) <= names
    assert {p.name for p in (tmp_path / "elsewhere").iterdir()} >= set(STALE)


# --- IterationCheckpoint -------------------------------------------------------------------


def test_last_is_written_before_the_periodic_and_best_files(make_config, monkeypatch):
    written: list[str] = []
    replace = os.replace

    def record(src: Any, dst: Any) -> None:
        replace(src, dst)
        if str(dst).endswith(".ckpt"):
            written.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", record)
    # A monitored value that improves at every iteration: a new best.ckpt each time.
    monitor = ["callbacks.checkpoint.monitor=train/iteration", "callbacks.checkpoint.mode=max"]
    fit(make_config(*TOY, *monitor, "train.log_every=1", "train.iterations=5"))
    assert written == [
        "best.ckpt",  # iterations 1 and 2: only best is due
        "best.ckpt",
        "last.ckpt",  # iteration 3 (checkpoint_every): last first
        "iter_0000003.ckpt",
        "best.ckpt",
        "best.ckpt",  # iteration 4
        "last.ckpt",  # iteration 5, the final one: last first here too
        "best.ckpt",
    ]


def test_room_for_one_checkpoint_updates_last(make_config, tmp_path, monkeypatch):
    # The disk has room for one more checkpoint at iteration 6: that one is last.ckpt, and the
    # periodic copy costs no new space (a hard link).
    monkeypatch.setattr(torch, "save", FakeDisk(full_from=6, room=1.5).save)
    fit(make_config(*TOY))
    checkpoints = tmp_path / "checkpoints"
    assert load_checkpoint_file(checkpoints / "last.ckpt")["gan_lab"]["iteration"] == 6
    assert load_checkpoint_file(checkpoints / "iter_0000006.ckpt")["gan_lab"]["iteration"] == 6


def test_disk_full_on_the_periodic_file_still_updates_last(make_config, tmp_path, monkeypatch):
    link = os.link

    def full_for_periodic(src: Any, dst: Any) -> None:
        if Path(dst).name.startswith(".iter_0000006"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        link(src, dst)

    monkeypatch.setattr(os, "link", full_for_periodic)
    with pytest.raises(DiskFullError, match="iter_0000006.ckpt"):
        fit(make_config(*TOY))
    checkpoints = tmp_path / "checkpoints"
    assert load_checkpoint_file(checkpoints / "last.ckpt")["gan_lab"]["iteration"] == 6
    assert not (checkpoints / "iter_0000006.ckpt").exists() and temp_files(checkpoints) == []


# --- end to end ----------------------------------------------------------------------------


def test_fit_on_a_full_disk_raises_the_user_error(make_config, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", FakeDisk(full_from=6, room=0.1).save)
    with pytest.raises(Exception) as error:
        fit(make_config(*TOY))
    checkpoints = tmp_path / "checkpoints"
    user_error = find_user_error(error.value)
    assert isinstance(user_error, DiskFullError), repr(error.value)
    assert f"disk full while writing {checkpoints / 'last.ckpt'}" in str(user_error)
    assert load_checkpoint_file(checkpoints / "last.ckpt")["gan_lab"]["iteration"] == 3
    assert temp_files(checkpoints) == []
    # Space freed: the same run resumes from that last.ckpt, and a write killed earlier (its
    # temporary file left behind) is cleaned up.
    monkeypatch.undo()
    (checkpoints / ".last.ckpt.abc123.tmp").write_bytes(b"partial")
    run = fit(make_config(*TOY, "ckpt_path=last"))
    assert run.module.iteration == 6 and temp_files(checkpoints) == []
    assert load_checkpoint_file(checkpoints / "last.ckpt")["gan_lab"]["iteration"] == 6


CLI = """
import sys, torch
from tests.test_disk_full import FakeDisk
torch.save = FakeDisk(full_from=6, room=0.1).save
from gan_lab.train import main
sys.argv = ["gan_lab.train", *sys.argv[1:]]
main()
"""


def test_cli_on_a_full_disk_prints_one_line(tmp_path):
    run_dir = tmp_path / "run"
    result = processes.run(
        [sys.executable, "-c", CLI, *TOY, f"hydra.run.dir={run_dir}"],
        timeout=90,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(
        f"gan_lab.train: error: disk full while writing {last}"
    ), result.stderr[-3000:]
    assert load_checkpoint_file(last)["gan_lab"]["iteration"] == 3


# --- a real full disk ----------------------------------------------------------------------


@pytest.mark.slow
def test_real_tmpfs_full_disk(tmp_path):
    # A tmpfs of 3 MiB holds one 1.6 MB ring_mlp checkpoint but not a second beside it.
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    try:
        run_dir = mount / "run"
        result = processes.run(
            [
                sys.executable,
                "-m",
                "gan_lab.train",
                "experiment=ring_mlp",
                "train.iterations=6",
                "train.checkpoint_every=3",
                "eval=none",
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={run_dir}",
            ],
            timeout=90,
            check=False,
            cwd=ROOT,
        )
        last = run_dir / "checkpoints" / "last.ckpt"
        assert result.returncode == 1, result.stderr[-3000:]
        assert result.stderr.splitlines()[-1].startswith(
            f"gan_lab.train: error: disk full while writing {last}"
        ), result.stderr[-3000:]
        assert load_checkpoint_file(last)["gan_lab"]["iteration"] == 3
        assert temp_files(last.parent) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False, timeout=30)

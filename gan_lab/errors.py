"""User errors: one exception type for what a user can fix, reported by every entry point as
one line on stderr and a non-zero exit status, without a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Something the user can fix: a config value, a file, a command-line argument.

    The message names the key or file and the fix. Entry points print it as one line and exit
    with ``exit_code``; code that calls gan_lab from Python catches it like any exception.
    """

    exit_code = 1


class UsageError(UserError):
    """A malformed or missing command-line argument (exit status 2, as argparse uses)."""

    exit_code = 2


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs is not there (data, weights, a checkpoint)."""


class BadFileError(UserError, ValueError):
    """A file is there but unreadable: truncated, corrupt, or of another kind."""


class ConfigError(UserError, ValueError):
    """A config value breaks a rule; the message is ``key=value: rule``."""

    def __init__(self, key: str, value: object, rule: str) -> None:
        super().__init__(f"{key}={value}: {rule}")
        self.key, self.value, self.rule = key, value, rule


class DiskFullError(UserError, OSError):
    """The disk (or the user's quota) filled while a file was written; the file at the path is
    unchanged. ``errno`` is ENOSPC or EDQUOT, so ``except OSError`` code can still tell."""


def find_user_error(error: BaseException | None) -> UserError | None:
    """``error`` if it is a UserError, else the first one in its chain of explicit causes
    (``raise ... from``): Hydra's ``instantiate`` wraps what a constructor raises that way.

    Only causes count, not the exception being handled when ``error`` was raised: a bug inside
    an ``except UserError`` block is a bug and keeps its traceback.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split())


@contextmanager
def reported_as_one_line(program: str) -> Iterator[None]:
    """Around an entry point's body: a UserError (or one wrapped by Hydra) becomes
    ``<program>: error: <message>`` on stderr and ``SystemExit(exit_code)``.

    ``HYDRA_FULL_ERROR=1`` lets it propagate with its traceback, as Hydra does for its own
    errors. Anything that is not a UserError is a bug and keeps its traceback.
    """
    try:
        yield
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{program}: error: {one_line(user_error)}", file=sys.stderr, flush=True)
        raise SystemExit(user_error.exit_code) from None

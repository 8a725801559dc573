"""User errors at the command line: the message alone, not a traceback.

Entry points wrap their ``main`` with :func:`user_errors`. An error that names a bad file, row, field or config value
(the classes in :func:`user_error_types`, a missing file among them) prints as one ``error: ...`` message on stderr
and exits with status 1; ``HYDRA_FULL_ERROR=1`` shows the whole traceback, as Hydra does for its own errors. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable


MAX_REPORTED_ERRORS = 20


class ConfigError(ValueError):
    """A run that cannot start: the message names the config field and what is wrong with it."""


class DataFileError(ValueError):
    """A data file has bad rows; ``errors`` lists one ``where: problem`` line for each (the first
    ``MAX_REPORTED_ERRORS`` of ``total``)."""

    def __init__(self, path: str | Path, errors: list[str], total: int):
        self.errors = errors
        more = f"\n  ... and {total - len(errors)} more" if total > len(errors) else ""
        super().__init__(f"{path}: {total} bad row(s):\n  " + "\n  ".join(errors) + more)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that describe bad input rather than a bug (imported here, lazily, to keep imports light)."""
    from retriever_server.base import IndexMismatchError
    from retriever_server.corpus import CorpusError

    return ConfigError, DataFileError, IndexMismatchError, CorpusError, FileNotFoundError


def user_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an entry point: a user error becomes ``error: <message>`` on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except user_error_types() as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return wrapper

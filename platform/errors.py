"""User-facing errors.

A :class:`UserError` is raised for bad input (a missing folder, an unknown name in a
YAML file, a negative weight...). Command-line entry points catch it, print its
one-paragraph message and exit with a non-zero status, without a traceback; every
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(UserError):
    """A search space, data YAML or command-line value is invalid."""


class DataError(UserError):
    """A data folder or file cannot be used."""


def cli_main(func):
    """Decorate a ``main(argv) -> int`` so that user errors exit cleanly."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            logging.getLogger("platform").debug("user error", exc_info=True)
            from platform.secrets import scrub

            print(f"error: {scrub(exc)}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper

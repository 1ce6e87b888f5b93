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


def mlflow_refusal(exc: BaseException) -> str | None:
    """The one-paragraph message for an MLflow server that refused this client's credentials
    (HTTP 401/403), else None: bad credentials are user input, not a bug."""
    if not type(exc).__module__.startswith("mlflow"):
        return None
    try:
        code = exc.get_http_status_code()
    except Exception:  # an MLflow error without an HTTP status: judged by its text below
        code = None
    text = str(exc)
    if code not in (401, 403) and "error code 401" not in text and "error code 403" not in text:
        return None
    import os

    uri = os.environ.get("MLFLOW_TRACKING_URI", "(unset)")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(unset)")
    return (f"the MLflow server at {uri} refused the credentials of user {user!r} ({text.splitlines()[0][:200]}). "
            "Check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) and that this "
            "user may write to the experiment.")


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
        except Exception as exc:
            message = mlflow_refusal(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return 2

    return wrapper

"""Logging set-up for the command-line entry points."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging(level: int = logging.INFO) -> None:
    from platform.secrets import install_log_scrubber

    install_log_scrubber()  # no credential in any log line or traceback of a command-line tool
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party chatter that buries the search's own progress lines.
    for name in ("ray", "alembic", "mlflow", "urllib3", "matplotlib", "PIL", "filelock"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    quiet_third_party()


def quiet_third_party() -> None:
    """Silence advice meant for library developers (the search reports its own progress)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
    warnings.filterwarnings("ignore", message=".*input example was not provided.*")

"""Logging set-up for the command-line entry points."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party chatter that buries the search's own progress lines.
    for name in ("ray", "alembic", "mlflow", "urllib3", "matplotlib", "PIL", "filelock"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    warnings.filterwarnings("ignore", category=FutureWarning)

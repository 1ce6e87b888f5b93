"""Search driver (``python -m platform.search SPACE``)."""

from platform.search.driver import SearchOptions, SearchOutcome, run_search

__all__ = ["SearchOptions", "SearchOutcome", "run_search"]

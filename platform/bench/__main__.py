"""``python -m platform.bench <name> [args]``: run the benchmark module ``platform.bench.<name>``."""

from __future__ import annotations

import importlib
import sys

from platform.bench import available
from platform.errors import ConfigError, cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m platform.bench {{{','.join(names)}}} [options]\n"
              "       python -m platform.bench NAME --help   for a benchmark's options")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        raise ConfigError(f"unknown benchmark {name!r}; available: {', '.join(names)}.")
    module = importlib.import_module(f"platform.bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

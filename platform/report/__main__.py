"""``python -m platform.report SEARCH``: write the HTML report of a search."""

from __future__ import annotations

import argparse
import logging
import sys

from platform.errors import cli_main
from platform.logs import setup_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m platform.report",
        description="Write the HTML report of a search (history, importances, parallel coordinates, learning "
                    "curves, Pareto front, validation grids, spend) from its MLflow records. The page is "
                    "self-contained and opens offline.")
    p.add_argument("search", nargs="?", help="the search: its MLflow parent run id, its Tune experiment folder, or "
                                             "the space / experiment name (its newest search)")
    p.add_argument("--show", nargs="+", metavar="NAME",
                   help="one page for a show instead: each NAME a show (the `show:` tag of searches) or a search; "
                        "a row per shot with its search, champion, floors and gain, linked to the searches' reports")
    p.add_argument("-o", "--out", help="output file (default: mlruns/reports/<search run>.html)")
    p.add_argument("--log-to-mlflow", action="store_true", help="also log the page to the parent run (report/)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform import tracking
    from platform.report import build_report
    from platform.report.data import find_parent

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    if args.show:
        from platform.report.show import build_show

        sys.stdout.write(f"{build_show(args.show, client=client, out=args.out)}\n")
        return 0
    if not args.search:
        from platform.errors import ConfigError

        raise ConfigError("give a search (parent run id, experiment folder or name), or --show NAME ...")
    path = build_report(args.search, client=client, out=args.out)
    if args.log_to_mlflow:
        client.log_artifact(find_parent(client, args.search).info.run_id, str(path), artifact_path="report")
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m platform.search SPACE [--quick] ...``: run a hyperparameter search."""

from __future__ import annotations

import argparse
import logging
import sys

from platform.errors import cli_main
from platform.logs import setup_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m platform.search",
        description="Run a Ray Tune search (ASHA + Optuna TPE by default) of the common trainer, track it in MLflow, "
                    "promote the best model to the registry alias `champion` when it beats the current one and "
                    "write an HTML report (python -m platform.report).")
    p.add_argument("space", help="a file in search_spaces/ without .yaml (e.g. nafnet_fewshot) or a YAML path")
    p.add_argument("--quick", action="store_true", help="apply the space's `quick` profile (small, CPU-friendly)")
    p.add_argument("--data", help="data folder (overrides task.data), or sample:<name>")
    p.add_argument("--max-trials", type=int, help="number of trials (overrides search.num_trials)")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="wall-clock budget of the whole search (e.g. 10m, 90s, 1h): trials, epochs and crops are "
                        "sized to it from a measured step time (what --set fixes is kept)")
    p.add_argument("--experiment", help="MLflow experiment and registered-model name (default: the space's name)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", help="Ray storage path or URI (s3://bucket/prefix) for results and checkpoints")
    p.add_argument("--no-promote", action="store_true", help="register nothing and leave the champion alone")
    p.add_argument("--num-cpus", type=int, help="logical CPUs for a local Ray (default: max(8, cores))")
    p.add_argument("--num-gpus", type=int, help="GPUs of a local Ray (default: detected)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="EXPERIMENT",
                   help="continue a crashed or interrupted search: the newest one of this space under --storage, "
                        "or the given experiment folder")
    p.add_argument("--warm-start", nargs="+", default=[], metavar="SEARCH",
                   help="learn from earlier searches (MLflow parent run id, experiment or space name): their best "
                        "configurations run first and their trials inform Optuna's sampler (see docs/warmstart.md)")
    p.add_argument("--init-from", metavar="MODEL_URI",
                   help="start every trial of the same architecture from these weights, e.g. "
                        "models:/shot_a@champion (partial load; warm_start.init searches scratch vs champion)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value of the space after --quick, e.g. --set resources.gpus_per_worker=0.25 "
                        "or --set 'optimizer.lr={loguniform: [1e-4, 1e-3]}' (VALUE is YAML; repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values parsed as YAML)."""
    import yaml

    from platform.errors import ConfigError

    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. "
                              "--set resources.gpus_per_worker=0.25.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]}).") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} was already given a value.")
        node[parts[-1]] = value
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    from platform.search.driver import SearchOptions, run_search

    if args.max_trials is not None and args.max_trials < 1:
        from platform.errors import ConfigError

        raise ConfigError(f"--max-trials is {args.max_trials}; give a number >= 1.")
    from platform.search.timebox import parse_duration

    budget = parse_duration(args.time_budget) if args.time_budget is not None else None
    run_search(SearchOptions(space=args.space, quick=args.quick, data=args.data, max_trials=args.max_trials,
                             time_budget=budget,
                             overrides=parse_overrides(args.overrides),
                             experiment=args.experiment, address=args.address, storage=args.storage,
                             promote=not args.no_promote, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                             resume=args.resume, warm_start=args.warm_start, init_from=args.init_from))
    return 0


if __name__ == "__main__":
    sys.exit(main())

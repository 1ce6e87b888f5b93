"""``python -m platform.compress``: prune a trained model (structured, then fine-tuned).

::

    python -m platform.compress prune --model models:/nafnet_fewshot@champion --sparsity 0.5 \\
        --epochs 5 --output pruned.pt
    python -m platform.compress unstructured --model models:/nafnet_fewshot@champion --sparsity 0.5

``prune`` removes ``--sparsity`` of the channels of every prunable layer group (torch-pruning's
dependency graph), fine-tunes for ``--epochs`` with the model's own trial config (task, loss,
optimiser; ``--data`` points it at another folder of pairs) and writes a weights file that
``python -m platform.predict`` and ``python -m platform.export`` load like any checkpoint. It
prints parameters, MACs at 1080p and validation metrics before and after.

``unstructured`` zeroes the smallest ``--sparsity`` of each layer's weights
(``torch.nn.utils.prune``) and prints what that buys on a dense CPU kernel: the time of one
frame before and after (``--resolution``, default 1080p). Expect none.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from platform.errors import ConfigError, UserError, cli_main

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.compress", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("prune", help="structured channel pruning + fine-tuning")
    un = sub.add_parser("unstructured", help="magnitude pruning (zeroes weights) and its measured speed")
    for s in (pr, un):
        s.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/RUN_ID/model or a checkpoint")
        s.add_argument("--sparsity", type=float, required=True, help="fraction of channels (weights) removed")
    pr.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs with the common trainer (0: none)")
    pr.add_argument("--data", default=None, help="folder of pairs to fine-tune on (default: the model's task.data)")
    pr.add_argument("--output", type=Path, required=True, help="weights file to write (e.g. pruned.pt)")
    pr.add_argument("--overwrite", action="store_true")
    un.add_argument("--resolution", default="1080p", help="frame size timed: 1080p, 4k, ... or WIDTHxHEIGHT")
    return p


def _validate(model, config) -> dict[str, float]:
    from platform import floors, tasks

    task = tasks.create(config["task"]["name"], config["task"], seed=int(config.get("train", {}).get("seed", 0)))
    return floors.score(task, model)


def _cost_line(label: str, model, config) -> str:
    from platform.compress.cost import count_macs, count_params

    channels = int((config.get("_model_kwargs") or {}).get("in_channels", 3))
    return (f"{label:<8} {count_params(model) / 1e6:8.3f} M params  "
            f"{count_macs(model, in_channels=channels) / 1e9:8.1f} GMACs per 1080p frame")


def prune_command(args, report=print) -> int:
    from platform.compress.finetune import prune_and_finetune
    from platform.pyfunc import load_any
    from platform.safeio import save_atomic, to_json_text

    if args.output.exists() and not args.overwrite:
        raise UserError(f"--output {args.output} already exists; nothing was written. Pass --overwrite to replace it.")
    if args.epochs < 0:
        raise ConfigError(f"--epochs is {args.epochs}; give 0 (prune only) or more.")
    loaded = load_any(args.model, "cpu")
    config = loaded.config if not args.data else {**loaded.config, "task": {**loaded.config["task"], "data": args.data}}
    report(_cost_line("before", loaded.model, config))
    before = _validate(loaded.model, config)
    with tempfile.TemporaryDirectory(prefix="prune-") as tmp:
        out = prune_and_finetune(loaded.model, config, args.sparsity, args.epochs, tmp)
    report(_cost_line("after", out.model, out.config))
    after = _validate(out.model, out.config)
    for key in sorted(before):
        report(f"{key:<12} before {before[key]:.4f}  after {after.get(key, float('nan')):.4f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": {k: v.detach().cpu() for k, v in out.model.state_dict().items()},
             "config": to_json_text(out.config), "epoch": int(out.metrics.get("epoch", 0))}
    save_atomic(state, args.output)
    report(f"wrote    {args.output} (load it with --model {args.output} in predict / export)")
    return 0


def unstructured_command(args, report=print) -> int:
    from platform.compress.cost import count_params, torch_ms_per_frame
    from platform.compress.prune import prune_unstructured, zero_fraction
    from platform.frame_size import parse_resolution
    from platform.pyfunc import load_any

    _, w, h = parse_resolution(args.resolution, "--resolution")
    loaded = load_any(args.model, "cpu")
    sparse = prune_unstructured(loaded.model, args.sparsity)
    dense_ms = torch_ms_per_frame(loaded.model, loaded.config, w, h)
    sparse_ms = torch_ms_per_frame(sparse, loaded.config, w, h)
    report(f"unstructured {args.sparsity:.0%}: {zero_fraction(sparse):.1%} of the weights are zero, "
           f"{count_params(sparse, nonzero=True) / 1e6:.3f} M non-zero of {count_params(sparse) / 1e6:.3f} M")
    report(f"time per {w}x{h} frame on this CPU: dense {dense_ms:.0f} ms, zeroed {sparse_ms:.0f} ms "
           f"(x{dense_ms / sparse_ms:.2f}): dense kernels multiply the zeros too; use 'prune' for speed.")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from platform.compress.prune import check_sparsity

    check_sparsity(args.sparsity, "--sparsity")
    return prune_command(args) if args.command == "prune" else unstructured_command(args)


if __name__ == "__main__":
    sys.exit(main())

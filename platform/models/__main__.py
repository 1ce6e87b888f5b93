"""``python -m platform.models``: table of every registered model and size.

Columns: parameters, MACs at RxR (default 256; MACs = FLOPs / 2 counted by
``torch.utils.flop_counter.FlopCounterMode``, element-wise ops not counted) and task kind.
"""

from __future__ import annotations

import argparse
import logging
import sys

from platform.errors import ConfigError, cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="registered model names (default: all)")
    parser.add_argument("--resolution", type=int, default=256, help="square input size for the MAC count")
    parser.add_argument("--no-macs", action="store_true", help="only count parameters")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    if args.resolution < 1:
        raise ConfigError(f"--resolution must be a positive integer, got {args.resolution}.")
    logging.basicConfig(level=logging.WARNING)

    from platform.models import MODELS
    from platform.models.summary import format_table, model_rows

    for name in args.names:
        MODELS.get(name, where="python -m platform.models")
    rows = model_rows(args.names or None, resolution=args.resolution, macs=not args.no_macs)
    print(format_table(rows, resolution=args.resolution, markdown=args.markdown))
    print(f"\nMACs = FLOPs / 2 from torch.utils.flop_counter.FlopCounterMode on a 1x3x{args.resolution}x"
          f"{args.resolution} input (convolutions, matrix products and attention only; element-wise ops such "
          "as norms, activations and MambaIR's selective scan are not counted).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

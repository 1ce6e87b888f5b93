"""``python -m platform.bench identity``: does starting residual networks as the identity pay?

Trains the same NAFNet of the ``nafnet_fewshot`` space on the bundled ``vfx_grade`` set twice per
seed, with the residual branch's last layer zeroed (``identity_init: true``, the default) and with
it left random (``false``), through the common trainer in this process (no Ray, no MLflow), and
prints the validation PSNR after each epoch and the best, with the quality floors of the same
validation frames for scale. The identity start stays the default only if it is not worse.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench identity", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--size", default="small", help="NAFNet size (small, base, large)")
    p.add_argument("--width", type=int, default=None, help="override the size's width (e.g. 8 for a CPU run)")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--variants", default="identity,random", help="which starts to train (comma-separated)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return p


def config(args, identity: bool, seed: int) -> dict:
    from platform.config import load_spec
    from platform.data.samples import resolve_data
    from platform.search.conditional import SpaceModel

    spec = load_spec("nafnet_fewshot")
    cfg = SpaceModel.from_spec(spec).resolve(lambda p: p.options[0])
    options = {"identity_init": identity, **({"width": args.width} if args.width else {})}
    cfg["model"] = {"architecture": "nafnet", "size": args.size, "options": options}
    cfg["task"].update(data=str(resolve_data("sample:vfx_grade")), crop=args.crop, batch_size=args.batch,
                       crops_per_epoch=args.batch * args.steps_per_epoch)
    cfg["loss"] = {"l1": 1.0}
    cfg["optimizer"]["lr"] = args.lr
    cfg["train"].update(epochs=args.epochs, seed=seed, image_every=10 ** 6,
                        precision="auto" if args.device == "cuda" else "fp32")
    cfg["resources"] = dict(spec["resources"])
    return cfg


class _Session:
    """A trainer session on a chosen device that keeps the reports and no checkpoints."""

    rank, world_size = 0, 1

    def __init__(self, device: str):
        import torch

        self._device = torch.device(device)
        self.reports: list[dict] = []

    def device(self):
        return self._device

    def prepare_model(self, model):
        return model.to(self._device)

    def get_checkpoint_dir(self):
        return None

    def report(self, metrics, checkpoint_dir):
        self.reports.append(dict(metrics))


def run(args) -> dict:
    from platform.train.loop import train_loop

    curves: dict[str, list[list[float]]] = {"identity": [], "random": []}
    for seed in range(args.seeds):
        for name, identity in (("identity", True), ("random", False)):
            if name not in args.variants.split(","):
                continue
            t0 = time.perf_counter()
            session = _Session(args.device)
            with tempfile.TemporaryDirectory():
                train_loop(config(args, identity, seed), session)
            curves[name].append([r["val_psnr"] for r in session.reports])
            log.info("%s seed %d: best %.2f dB in %.0f s", name, seed, max(curves[name][-1]), time.perf_counter() - t0)
    return {"curves": curves, "args": {k: str(v) for k, v in vars(args).items()}}


def table(result: dict, floors: dict | None) -> str:
    c = {k: v for k, v in result["curves"].items() if v}
    names = list(c)
    lines = ["| epoch | " + " | ".join(f"{n} start (dB, mean over seeds)" for n in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for e in range(len(c[names[0]][0])):
        lines.append(f"| {e + 1} | " + " | ".join(f"{statistics.mean(s[e] for s in c[n]):.2f}" for n in names) + " |")
    lines.append("| best | " + " | ".join(f"{statistics.mean(max(s) for s in c[n]):.2f}" for n in names) + " |")
    if floors:
        lines.append("\nfloors on the same frames: " + ", ".join(f"{n} {s['val_psnr']:.2f} dB" for n, s in floors.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    from platform import floors, tasks
    from platform.errors import ConfigError

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu.")
    result = run(args)
    task_cfg = config(args, True, 0)["task"]
    result["floors"] = floors.floor_scores([tasks.create("img2img", task_cfg)])
    print(table(result, result["floors"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Parameter / MAC table of every registered model and size.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one
``1 x C x R x R`` input (R = 256 by default) and reported as FLOPs / 2. That counter only
counts matrix products, convolutions and attention kernels; element-wise work (norms,
activations, pooling, and the selective scan of MambaIR) is not included. Models are built
and run on the ``meta`` device by default, so the table needs no memory for activations
and runs in seconds even for 100M-parameter models at high resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from platform.models._registry import MODELS, create

log = logging.getLogger(__name__)


@dataclass
class ModelRow:
    name: str
    size: str | None
    kind: str
    params: int
    macs: int | None
    note: str = ""

    @property
    def label(self) -> str:
        return self.name if self.size is None else f"{self.name}/{self.size}"


def count_macs(model: torch.nn.Module, shape: tuple[int, ...], device: str | torch.device = "meta") -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2 from FlopCounterMode)."""
    x = torch.zeros(shape, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops() // 2)


def model_rows(names: Iterable[str] | None = None, resolution: int = 256, device: str = "meta",
               macs: bool = True) -> list[ModelRow]:
    """One :class:`ModelRow` per registered model and size."""
    rows = []
    for name in names or MODELS.available():
        meta = MODELS.meta(name)
        for size in meta["sizes"] or (None,):
            with torch.device(device):
                model = create(name, size=size)
            model.eval()
            params = sum(p.numel() for p in model.parameters())
            in_ch = 3
            mac = None
            note = ""
            if macs:
                try:
                    mac = count_macs(model, (1, in_ch, resolution, resolution), device=device)
                except Exception as exc:  # a row without MACs is still useful
                    note = f"MACs failed: {type(exc).__name__}: {exc}"[:120]
                    log.warning("%s/%s: %s", name, size, note)
            rows.append(ModelRow(name, size, meta["kind"], params, mac, note))
    return rows


def format_table(rows: list[ModelRow], resolution: int = 256, markdown: bool = False) -> str:
    head = ("model", "size", "kind", "params (M)", f"GMACs @{resolution}x{resolution}")
    body = [
        (r.name, r.size or "-", r.kind, f"{r.params / 1e6:.2f}",
         f"{r.macs / 1e9:.1f}" if r.macs is not None else r.note or "n/a")
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 2) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in body])

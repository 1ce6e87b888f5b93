"""Last-resort downloads from the libraries' own hubs, used only when the store lacks a file.

Third-party weights are meant to be mirrored in the store (``setup`` creates the
``torchvision/`` and ``timm/`` groups, ``upload`` fills them) so that clusters without
internet work. When a key is in neither the store nor the cache, and the machine can
reach the hub's host, the file is fetched the way the library itself would and put
into the content-addressed cache:

* ``torchvision/<file>`` -> ``https://download.pytorch.org/models/<file>`` (LPIPS's AlexNet
  and VGG16 trunks, torchvision backbones), checked against the hash prefix in the name;
* ``timm/<model_name><ext>`` -> ``timm.create_model(model_name, pretrained=True)`` from the
  Hugging Face hub; the file is the full model's ``state_dict`` (``.pth``, or
  ``.safetensors`` when the key ends so).

Disable with ``PLATFORM_PRETRAINED_HUB=0``. New groups register a fetcher in
:data:`HUB_SOURCES`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from platform.registry import Registry

log = logging.getLogger(__name__)

HUB_SOURCES = Registry("pretrained hub source")
Fetcher = Callable[[str, Path, bool], dict[str, Any]]


def hub_enabled() -> bool:
    return os.environ.get("PLATFORM_PRETRAINED_HUB", "1").strip().lower() not in ("0", "false", "no", "off")


def network_available(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when ``host`` resolves and accepts a TCP connection (no internet -> False, fast)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _rest(key: str) -> str:
    return key.split("/", 1)[1] if "/" in key else key


@HUB_SOURCES.register("torchvision", host="download.pytorch.org")
def fetch_torchvision(key: str, dest: Path, progress: bool) -> dict[str, Any]:
    import torch

    filename = PurePosixPath(_rest(key)).name
    url = f"https://download.pytorch.org/models/{filename}"
    match = re.search(r"-([a-f0-9]{6,})\.", filename)
    torch.hub.download_url_to_file(url, str(dest), hash_prefix=match.group(1) if match else None,
                                   progress=progress)
    return {"source": url, "licence": "BSD-3-Clause (torchvision); ImageNet-trained, see ImageNet terms"}


@HUB_SOURCES.register("timm", host="huggingface.co")
def fetch_timm(key: str, dest: Path, progress: bool) -> dict[str, Any]:
    import timm
    import torch

    path = PurePosixPath(_rest(key))
    name = path.name[: -len(path.suffix)] if path.suffix in (".pth", ".pt", ".bin", ".safetensors") else path.name
    model = timm.create_model(name, pretrained=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(dest))
    else:
        torch.save(state, dest)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return {
        "source": f"timm:{name} (hf_hub_id={cfg.get('hf_hub_id', '')})",
        "licence": str(cfg.get("license", "")),
        "architecture": cfg.get("architecture", name),
    }


def hub_source(key: str) -> tuple[str, Fetcher, str] | None:
    """``(group, fetcher, host)`` for keys whose group has a hub, else ``None``."""
    group = key.split("/", 1)[0]
    if group not in HUB_SOURCES:
        return None
    return group, HUB_SOURCES.get(group), HUB_SOURCES.meta(group)["host"]

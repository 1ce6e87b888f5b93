"""Pretrained weight store: S3/MinIO or a local folder, a verified node cache, and loaders.

Public API used across the platform::

    resolve(key) -> pathlib.Path     local path of a weight file, e.g.
                                     resolve("torchvision/alexnet-owt-7be5be79.pth")
    pull(key) -> FetchResult         the same, plus metadata and where it came from
    WeightsUnavailableError          the file cannot be had; the message names the key, the
                                     store and what to do (a UserError)
    ChecksumMismatchError            a download does not match its .meta.json (refused)
    load_weights(model, path_or_state, strict=None, ...) -> LoadReport   (loading.py)
    param_groups / apply_backbone_freeze / pretrained_lr_scale           (finetune.py)

Store settings: ``PLATFORM_PRETRAINED_STORE`` (``s3://models/pretrained_models``),
``PLATFORM_PRETRAINED_ENDPOINT`` (MinIO URL), ``PLATFORM_PRETRAINED_REGION``; without a store,
the folder ``PLATFORM_PRETRAINED_DIR`` (default ``.cache/pretrained``) is the store. The
command line is ``python -m platform.pretrained {setup,upload,list,pull,info}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from platform.pretrained.backends import LocalStore, S3Store, Store, StoreError, open_store
from platform.pretrained.cache import Cache, FetchResult
from platform.pretrained.meta import WeightMeta, make_key
from platform.pretrained.resolver import (
    ChecksumMismatchError,
    WeightsUnavailableError,
    configured_store,
    local_dir,
    public_config,
    pull,
    resolve,
)

# Kept for modules written against the first, local-only version.
DEFAULT_LOCAL_STORE = Path(os.environ.get("PLATFORM_PRETRAINED_DIR", ".cache/pretrained"))


def store_root() -> Path:
    """The local weight folder (``PLATFORM_PRETRAINED_DIR``)."""
    return local_dir()


_LAZY = {
    "load_weights": "loading",
    "load_pretrained": "loading",
    "plan_load": "loading",
    "LoadReport": "loading",
    "WeightsMismatchError": "loading",
    "extract_state_dict": "loading",
    "FinetuneOptions": "finetune",
    "param_groups": "finetune",
    "apply_backbone_freeze": "finetune",
    "pretrained_lr_scale": "finetune",
    "set_epoch_lrs": "finetune",
    "lr_lambdas": "finetune",
}


def __getattr__(name: str) -> Any:
    # Loading and fine-tuning need torch; resolving a path (and the CLI) does not.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"platform.pretrained.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'platform.pretrained' has no attribute {name!r}")


__all__ = [
    "Cache", "ChecksumMismatchError", "FetchResult", "LocalStore", "S3Store", "Store", "StoreError",
    "WeightMeta", "WeightsUnavailableError", "configured_store", "local_dir", "make_key", "open_store",
    "public_config", "pull", "resolve", "store_root",
]
__all__ += list(_LAZY)  # the lazily imported names (see __getattr__)

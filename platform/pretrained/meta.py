"""Weight-file metadata (``<file>.meta.json`` beside every weight file) and store keys.

A *key* names a weight file inside a store, relative to the store root:
``<group>/<architecture>/<file>`` for the project's own models (``layer_2/nafnet/NAFNet-SIDD-width64.pth``)
or ``<group>/<file>`` for third-party mirrors (``torchvision/alexnet-owt-7be5be79.pth``,
``timm/resnet34.a1_in1k.pth``).

The metadata file records what is needed to trust and to use the weights: the SHA-256
and size (verified on every download), where the file came from and under which licence,
and which architecture and configuration it fits (so a loader can pick the strict path).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from platform.errors import ConfigError

META_SUFFIX = ".meta.json"
README_NAME = "README.md"
SCHEMA_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


def validate_key(key: str) -> str:
    """Return ``key`` normalised (no leading/trailing slashes) or raise a :class:`ConfigError`."""
    if not isinstance(key, str) or not key.strip("/"):
        raise ConfigError(f"pretrained key {key!r} is empty; use '<group>/<architecture>/<file>'.")
    clean = key.strip("/")
    parts = PurePosixPath(clean).parts
    bad = [p for p in parts if not _KEY_PART.match(p) or p in (".", "..")]
    if bad or "\\" in clean:
        raise ConfigError(
            f"pretrained key {key!r} has an invalid part {bad[0] if bad else clean!r}: keys are "
            "relative paths like 'layer_2/nafnet/NAFNet-SIDD-width64.pth' made of letters, digits "
            "and . _ - + = (no '..', no backslashes)."
        )
    if clean.endswith(META_SUFFIX) or parts[-1] == README_NAME:
        raise ConfigError(f"pretrained key {key!r} names a metadata/README object, not a weight file.")
    return clean


def make_key(group: str, arch: str | None, filename: str) -> str:
    """``<group>/<arch>/<filename>`` (``<group>/<filename>`` without an architecture)."""
    parts = [group.strip("/")] + ([arch.strip("/")] if arch else []) + [Path(filename).name]
    return validate_key("/".join(parts))


def key_suffix(key: str) -> str:
    """File extension of a key, kept on cached blobs (``.pth``, ``.safetensors``): some loaders
    (timm, safetensors) choose the file format from it."""
    suffix = PurePosixPath(key).suffix
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,12}", suffix) else ""


def sha256_file(path: str | Path, *, progress: Callable[[int], Any] | None = None,
                chunk: int = 8 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (``progress(nbytes)`` after each)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class WeightMeta:
    """Contents of ``<file>.meta.json``."""

    key: str
    sha256: str | None
    size: int
    source: str = ""
    licence: str = ""
    architecture: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    state_dict_key: str | None = None  # e.g. "params" for NAFNet/BasicSR releases
    notes: str = ""
    schema: int = SCHEMA_VERSION
    # Not stored in the meta file: the object's ETag when the store has no meta file.
    etag: str | None = None

    @property
    def verified(self) -> bool:
        """True when a checksum is known (the file has a meta file)."""
        return self.sha256 is not None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("etag")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str) -> WeightMeta:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc}); re-upload the weights to rewrite it.") from None
        return cls.from_mapping(data, where=where)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str) -> WeightMeta:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}.")
        sha = data.get("sha256")
        if not isinstance(sha, str) or not _HEX64.match(sha.lower()):
            raise ConfigError(f"{where}: field 'sha256' is {sha!r}, expected 64 hex digits.")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigError(f"{where}: field 'size' is {size!r}, expected a byte count >= 0.")
        config = data.get("config") or {}
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where}: field 'config' is {config!r}, expected a JSON object.")
        known = {f for f in cls.__dataclass_fields__ if f != "etag"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.update(sha256=sha.lower(), size=size, config=dict(config))
        kwargs.setdefault("key", "")
        return cls(**kwargs)

    def public_dict(self) -> dict[str, Any]:
        """Flat, MLflow-friendly description (no secrets exist in metadata)."""
        return {
            "key": self.key,
            "sha256": self.sha256 or "unknown",
            "size": self.size,
            "source": self.source,
            "licence": self.licence,
            "architecture": self.architecture,
        }


def parse_config_arg(value: str | None) -> dict[str, Any]:
    """``--config`` value: a JSON object, or ``@path`` to a JSON/YAML file."""
    if not value:
        return {}
    text, where = value, "--config"
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise ConfigError(f"--config file {path} does not exist.")
        text, where = path.read_text(), str(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise ConfigError(f"{where}: expected a mapping of architecture settings.")
            return data
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: {exc}; give a JSON object such as '{{\"width\": 64, \"enc_blk_nums\": [2, 2, 4, 8]}}'."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}.")
    return data

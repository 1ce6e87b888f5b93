"""Frame sizes by name (``1080p``, ``4k``, ...) or ``WIDTHxHEIGHT``: what the prediction bench,
the compression cost meter and ``compress.pareto_frame`` accept (no torch import, so the config
checker can use it)."""

from __future__ import annotations

from platform.errors import ConfigError

RESOLUTIONS = {"540p": (960, 540), "720p": (1280, 720), "1080p": (1920, 1080), "2k": (2048, 1080),
               "4k": (3840, 2160), "dci4k": (4096, 2160), "8k": (7680, 4320)}


def parse_resolution(text: str, where: str = "--resolutions") -> tuple[str, int, int]:
    """(label, width, height) of ``1080p``/``4k``/... or ``WIDTHxHEIGHT``; a ConfigError naming ``where``."""
    key = str(text).strip().lower()
    if key in RESOLUTIONS:
        w, h = RESOLUTIONS[key]
        return key, w, h
    try:
        w, h = (int(v) for v in key.split("x"))
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is neither a name ({', '.join(RESOLUTIONS)}) nor WIDTHxHEIGHT "
                          "(e.g. 640x360).") from None
    if w < 1 or h < 1:
        raise ConfigError(f"{where}: {text!r} must have a positive width and height.")
    return f"{w}x{h}", w, h

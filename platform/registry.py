"""Name -> factory registries (models, losses, metrics, tasks), after BasicSR and timm.

A module registers its factories at import time::

    MODELS = Registry("model")

    @MODELS.register("nafnet", kind="img2img", sizes=("small", "base", "large"))
    def nafnet(size="base", **kwargs): ...

and callers look them up by name; an unknown name raises a :class:`ConfigError` that
lists every registered name, so a typo in a YAML file gets a useful message.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from platform.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any):
        """Decorator: register ``obj`` under ``name`` (default: its ``__name__``)."""

        def decorator(obj):
            key = name or obj.__name__
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return decorator

    def get(self, name: str, *, where: str = "") -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name, where)) from None

    def unknown_message(self, name: str, where: str = "") -> str:
        close = difflib.get_close_matches(str(name), self._items, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        loc = f"{where}: " if where else ""
        return (
            f"{loc}unknown {self.kind} {name!r}.{hint} "
            f"Registered {self.plural}: {', '.join(sorted(self._items))}."
        )

    @property
    def plural(self) -> str:
        return f"{self.kind}es" if self.kind.endswith("s") else f"{self.kind}s"

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def available(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

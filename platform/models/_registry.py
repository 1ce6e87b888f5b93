"""The model registry: ``register_model`` decorator, ``create`` and ``available``.

Every architecture module registers one factory per name::

    @register_model("nafnet", kind="img2img", sizes=("small", "base", "large"), default_size="base")
    def nafnet(size="base", in_channels=3, out_channels=3, pretrained=False, **arch_kwargs): ...

The decorator wraps the factory so that, whoever calls it (``create`` or a direct call):

* ``size=None`` means the default size; an unknown size raises a :class:`ConfigError`
  naming the allowed sizes;
* an unknown keyword (a typo in a YAML file) raises a :class:`ConfigError` listing the
  keywords the factory accepts, instead of a bare ``TypeError``;
* the returned module is checked to carry an int ``size_multiple`` and gets
  ``model_name`` / ``model_size`` attributes (handy for logging).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from platform.errors import ConfigError
from platform.registry import Registry

MODELS = Registry("model")

KINDS = ("img2img", "segmentation")


def _check_size(name: str, size: Any, sizes: tuple[str, ...], default_size: str | None) -> str | None:
    if size is None:
        return default_size
    if not sizes:
        raise ConfigError(
            f"model {name!r} has no sizes, got size={size!r}. Leave 'size' out (or null) for this model."
        )
    if size not in sizes:
        raise ConfigError(
            f"model {name!r}: unknown size {size!r}. Allowed sizes: {', '.join(sizes)} "
            f"(default {default_size!r})."
        )
    return size


def register_model(
    name: str,
    *,
    kind: str,
    sizes: tuple[str, ...] = (),
    default_size: str | None = None,
    **meta: Any,
) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator registering a model factory under ``name``.

    Args:
        name: registry name used in YAML files (``model.name``).
        kind: ``"img2img"`` or ``"segmentation"``.
        sizes: the named sizes the factory accepts (may be empty for fixed presets).
        default_size: the size used when ``size`` is None; defaults to the first size.
        **meta: free metadata stored with the entry (paper, nominal parameter counts...).
    """
    if kind not in KINDS:
        raise ValueError(f"model {name!r}: kind must be one of {KINDS}, got {kind!r}")
    sizes = tuple(sizes)
    if default_size is None and sizes:
        default_size = sizes[0]
    if default_size is not None and default_size not in sizes:
        raise ValueError(f"model {name!r}: default_size {default_size!r} is not in sizes {sizes}")

    def decorator(factory: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        signature = inspect.signature(factory)
        accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())

        @functools.wraps(factory)
        def wrapper(*args: Any, **kwargs: Any) -> torch.nn.Module:
            if args:
                raise TypeError(f"model factory {name!r} takes keyword arguments only")
            kwargs["size"] = _check_size(name, kwargs.get("size"), sizes, default_size)
            if not accepts_var_kw:
                unknown = sorted(set(kwargs) - set(signature.parameters))
                if unknown:
                    allowed = ", ".join(p for p in signature.parameters)
                    raise ConfigError(
                        f"model {name!r}: unknown argument(s) {', '.join(unknown)}. "
                        f"Accepted arguments: {allowed}."
                    )
            model = factory(**kwargs)
            multiple = getattr(model, "size_multiple", None)
            if not isinstance(multiple, int) or multiple < 1:
                raise TypeError(f"model {name!r} must set an int attribute size_multiple >= 1")
            model.model_name = name
            model.model_size = kwargs["size"]
            return model

        MODELS.register(name, kind=kind, sizes=sizes, default_size=default_size, **meta)(wrapper)
        return wrapper

    return decorator


def create(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build the registered model ``name``; an unknown name raises :class:`ConfigError`."""
    return MODELS.get(name, where="model")(**kwargs)


def available() -> list[str]:
    """Sorted list of registered model names."""
    return MODELS.available()

"""Load pretrained weights into a model: strict for exact presets, honest partial transfer otherwise.

:func:`load_weights` takes a checkpoint path or a state dict (NAFNet/BasicSR releases keep the
weights under ``"params"``; ``state_dict``/``model`` wrappers and DDP ``module.`` prefixes are
unwrapped) and returns a :class:`LoadReport`.

* ``strict=True`` - names and shapes must match exactly (an exact preset such as NAFNet-SIDD-width64
  into a width-64 SIDD NAFNet); otherwise a :class:`WeightsMismatchError` lists the differences.
* ``strict=False`` - partial transfer. Each target tensor is paired with a source tensor

  1. by name (after stripping wrapper prefixes such as ``module.``/``_orig_mod.``),
  2. by name up to a prefix (``net.encoders.0.0.conv1.weight`` <-> ``encoders.0.0.conv1.weight``)
     when the pairing is unique both ways,
  3. by shape and position among the still unpaired tensors *of the same module*: inside a module
     path that exists on both sides, the remaining tensors are paired in order when their shapes
     are equal (renamed leaves such as ``weight_orig``).

  A pair whose shapes differ is reported as *shape-mismatched* and not loaded: a width-32 NAFNet
  loaded from width-64 weights receives only the tensors whose shapes really agree. The opt-in
  ``resize="slice"`` copies the leading slice of a larger source tensor instead (documented
  heuristic, not function-preserving: e.g. NAFNet's SimpleGate pairs channel ``i`` with ``i + c``,
  so a leading slice does not keep the pairs of the source network).
* ``strict=None`` (default) - strict when the checkpoint fits exactly, partial otherwise.

Invariants of a report: ``transferred + shape_mismatched + missing == target tensors`` and
``used source tensors + unexpected == source tensors``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from platform.errors import ConfigError, UserError

log = logging.getLogger(__name__)

#: Keys under which checkpoints commonly keep their weights, tried in this order.
STATE_DICT_KEYS = ("params", "params_ema", "state_dict", "model_state_dict", "model", "net", "network",
                   "module", "weights")
#: Prefixes added by wrappers (DistributedDataParallel, torch.compile) - stripped before matching.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

Shape = tuple[int, ...]


class WeightsMismatchError(UserError):
    """A strict load found missing, unexpected or differently shaped tensors."""


@dataclass(frozen=True)
class ShapeMismatch:
    target: str
    source: str
    target_shape: Shape
    source_shape: Shape

    def __str__(self) -> str:
        names = self.target if self.target == self.source else f"{self.target} <- {self.source}"
        return f"{names}: model {list(self.target_shape)} vs checkpoint {list(self.source_shape)}"


@dataclass
class LoadReport:
    """What a load did. Names are the model's own state-dict names (``model.state_dict()``)."""

    source: str
    strict: bool
    total_target: int
    total_source: int
    transferred: list[str] = field(default_factory=list)
    sliced: list[str] = field(default_factory=list)  # subset of transferred, copied by slicing
    shape_mismatched: list[ShapeMismatch] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)  # target name -> source name (transferred)
    matched_by: dict[str, str] = field(default_factory=dict)  # target name -> name|prefix|position
    parameter_names: frozenset[str] | None = None  # the model's parameters (None: not known)
    sha256: str | None = None

    @property
    def loaded_names(self) -> frozenset[str]:
        """Names of the model parameters that received pretrained values (all loaded tensors when
        the model's parameter names are unknown). The trainer builds learning-rate groups from it."""
        loaded = frozenset(self.transferred)
        return loaded if self.parameter_names is None else loaded & self.parameter_names

    @property
    def loaded_buffers(self) -> frozenset[str]:
        return frozenset(self.transferred) - self.loaded_names

    @property
    def counts(self) -> dict[str, int]:
        return {
            "transferred": len(self.transferred),
            "sliced": len(self.sliced),
            "shape_mismatched": len(self.shape_mismatched),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "target_tensors": self.total_target,
            "source_tensors": self.total_source,
        }

    @property
    def fraction(self) -> float:
        """Transferred share of the model's tensors."""
        return len(self.transferred) / self.total_target if self.total_target else 0.0

    def summary(self) -> str:
        c = self.counts
        sliced = f" ({c['sliced']} by slicing)" if c["sliced"] else ""
        how = Counter(self.matched_by.values())
        via = ", ".join(f"{n} by {k}" for k, n in sorted(how.items()) if k != "name")
        return (
            f"{'strict' if self.strict else 'partial'} load from {self.source}: {c['transferred']}/"
            f"{c['target_tensors']} model tensors transferred{sliced}{f' ({via})' if via else ''}, "
            f"{c['shape_mismatched']} shape-mismatched, {c['missing']} missing, "
            f"{c['unexpected']} unexpected of {c['source_tensors']} checkpoint tensors"
        )

    def as_metrics(self, prefix: str = "pretrained_") -> dict[str, float]:
        """Counts for MLflow (``pretrained_transferred``...)."""
        out: dict[str, float] = {f"{prefix}{k}": float(v) for k, v in self.counts.items()}
        out[f"{prefix}fraction"] = self.fraction
        return out

    def log(self, logger: logging.Logger = log, level: int = logging.INFO) -> None:
        """Summary and (compacted) lists at ``level``; the complete lists at DEBUG."""
        logger.log(level, "%s", self.summary())
        for title, names in (
            ("shape-mismatched", [str(m) for m in self.shape_mismatched]),
            ("missing (keep their initialisation)", self.missing),
            ("unexpected (unused checkpoint tensors)", self.unexpected),
            ("sliced", self.sliced),
        ):
            if names:
                logger.log(level, "%s: %s", title, compact_names(n.split(":")[0] for n in names))
                logger.debug("%s (all): %s", title, names)
        logger.debug("transferred: %s", self.transferred)


def _block_prefix(name: str) -> str | None:
    """``encoders.1.1`` for ``encoders.1.1.conv1.weight``: up to the first run of indices."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i > 0:
            j = i
            while j + 1 < len(parts) - 1 and parts[j + 1].isdigit():
                j += 1
            return ".".join(parts[: j + 1]) if j < len(parts) - 1 else None
    return None


def compact_names(names: Iterable[str], limit: int = 12) -> str:
    """``encoders.0.1.* x18, intro.weight`` - tensors grouped by block, for log lines."""
    counts: Counter[str] = Counter()
    for name in names:
        prefix = _block_prefix(name)
        counts[f"{prefix}.*" if prefix else name] += 1
    items = [f"{n} x{c}" if c > 1 else n for n, c in counts.items()]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# -- reading checkpoints -------------------------------------------------------------------------

def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, state_dict_key: str | None = None, *, where: str = "checkpoint"
                       ) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping inside a checkpoint object.

    ``state_dict_key`` picks a top-level key explicitly (``"params"`` for NAFNet releases,
    ``"params_ema"`` for their EMA weights); otherwise a plain tensor mapping is used as is and
    :data:`STATE_DICT_KEYS` are tried in order.
    """
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected a state dict (a mapping of tensors), got {type(obj).__name__}.")
    if state_dict_key is not None:
        if state_dict_key not in obj:
            raise ConfigError(
                f"{where}: has no key {state_dict_key!r}; its top-level keys are {sorted(map(str, obj))[:20]}."
            )
        return extract_state_dict(obj[state_dict_key], None, where=f"{where}[{state_dict_key!r}]")
    if _is_tensor_dict(obj):
        return dict(obj)
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, (Mapping, nn.Module)) and inner:
            return extract_state_dict(inner, None, where=f"{where}[{key!r}]")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors:
        dropped = sorted(str(k) for k in obj if k not in tensors)
        log.debug("%s: ignoring non-tensor entries %s", where, dropped)
        return tensors
    raise ConfigError(
        f"{where}: no weights found; top-level keys are {sorted(map(str, obj))[:20]}. Pass "
        "state_dict_key= naming the entry that holds the state dict."
    )


def read_checkpoint(path: str | os.PathLike, *, weights_only: bool = True) -> Any:
    """Load a ``.pth``/``.pt``/``.ckpt`` (torch) or ``.safetensors`` file on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch.load raises many types; each is re-raised with the file named
        if weights_only and "Unsupported global" in str(exc):
            raise ConfigError(
                f"checkpoint {path} contains pickled Python objects besides tensors, which are not loaded "
                "by default (they can run code). If you trust the file, pass weights_only=False; better, "
                "re-save just its state_dict."
            ) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {path} cannot be read by torch.load ({first_line[:200]}); is it a "
                          "complete .pth/.pt file? Re-download or re-save it.") from None


# -- matching ------------------------------------------------------------------------------------

def _strip_wrappers(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def _normalise(names: Iterable[str]) -> dict[str, str]:
    """normalised name -> original name (falls back to the original on a collision)."""
    out: dict[str, str] = {}
    for name in names:
        norm = _strip_wrappers(name)
        out[norm if norm not in out else name] = name
    return out


def _unique_suffix_pairs(targets: Iterable[str], sources: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs where one dotted name ends with the other (``a.b.c`` ~ ``b.c``), unique both ways."""
    targets, sources = list(targets), list(sources)
    if not targets or not sources:
        return []

    def suffixes(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[i:]) for i in range(1, len(parts))]

    by_suffix: dict[str, list[str]] = defaultdict(list)
    source_set = set(sources)
    for s in sources:
        for suf in suffixes(s):
            by_suffix[suf].append(s)
    cand_t: dict[str, set[str]] = {}
    for t in targets:
        cands = set(by_suffix.get(t, ()))  # source = <prefix>.t
        cands.update(suf for suf in suffixes(t) if suf in source_set)  # t = <prefix>.source
        if cands:
            cand_t[t] = cands
    count_s = Counter(s for cands in cand_t.values() for s in cands)
    return sorted((t, next(iter(c))) for t, c in cand_t.items() if len(c) == 1 and count_s[next(iter(c))] == 1)


def _module_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _can_slice(target: Shape, source: Shape) -> bool:
    return len(target) == len(source) and all(t <= s for t, s in zip(target, source)) and target != source


def _apply_rename(names: Iterable[str], rename: Sequence[tuple[str, str]] | Callable[[str], str] | None
                  ) -> dict[str, str]:
    """renamed source name -> original source name."""
    out: dict[str, str] = {}
    for name in names:
        new = name
        if callable(rename):
            new = rename(name)
        elif rename:
            for pattern, repl in rename:
                new = re.sub(pattern, repl, new)
        if new in out:
            raise ConfigError(f"rename maps both {out[new]!r} and {name!r} to {new!r}; make the rules distinct.")
        out[new] = name
    return out


def plan_load(target_shapes: Mapping[str, Sequence[int]], source_shapes: Mapping[str, Sequence[int]], *,
              resize: str = "none", positional: bool = True,
              rename: Sequence[tuple[str, str]] | Callable[[str], str] | None = None,
              parameter_names: Iterable[str] | None = None, source: str = "<state dict>") -> LoadReport:
    """Pair target and source tensors (see the module docstring) without touching any model.

    Works on shapes only, so it also runs on ``torch.device("meta")`` models and checkpoints.
    """
    if resize not in ("none", "slice"):
        raise ConfigError(f"resize={resize!r}: use 'none' (shape-mismatched tensors are skipped) or 'slice'.")
    tshape = {k: tuple(int(d) for d in v) for k, v in target_shapes.items()}
    renamed = _apply_rename(source_shapes, rename)  # renamed -> original
    sshape = {k: tuple(int(d) for d in v) for k, v in source_shapes.items()}
    t_norm = _normalise(tshape)  # norm -> original
    s_norm = {}
    for norm, renamed_name in _normalise(renamed).items():
        s_norm[norm] = renamed[renamed_name]  # norm -> original source name

    report = LoadReport(source=source, strict=False, total_target=len(tshape), total_source=len(sshape),
                        parameter_names=frozenset(parameter_names) if parameter_names is not None else None)
    used_t: set[str] = set()
    used_s: set[str] = set()

    def pair(tn: str, sn: str, how: str) -> None:
        t, s = t_norm[tn], s_norm[sn]
        used_t.add(tn)
        used_s.add(sn)
        if tshape[t] == sshape[s]:
            report.transferred.append(t)
            report.mapping[t] = s
            report.matched_by[t] = how
        elif resize == "slice" and _can_slice(tshape[t], sshape[s]):
            report.transferred.append(t)
            report.sliced.append(t)
            report.mapping[t] = s
            report.matched_by[t] = how
        else:
            report.shape_mismatched.append(ShapeMismatch(t, s, tshape[t], sshape[s]))

    # 1. same name
    for tn in t_norm:
        if tn in s_norm:
            pair(tn, tn, "name")
    # 2. same name up to a wrapper/prefix, unique both ways
    for tn, sn in _unique_suffix_pairs([t for t in t_norm if t not in used_t], [s for s in s_norm if s not in used_s]):
        pair(tn, sn, "prefix")
    # 3. shape and position among the unpaired tensors of matching module paths
    if positional:
        left_t: dict[str, list[str]] = defaultdict(list)
        left_s: dict[str, list[str]] = defaultdict(list)
        for tn in t_norm:
            if tn not in used_t:
                left_t[_module_of(tn)].append(tn)
        for sn in s_norm:
            if sn not in used_s:
                left_s[_module_of(sn)].append(sn)
        module_pairs = [(m, m) for m in left_t if m in left_s]
        module_pairs += _unique_suffix_pairs([m for m in left_t if m not in left_s],
                                             [m for m in left_s if m not in left_t])
        for mt, ms in module_pairs:
            candidates = left_s[ms]
            j = 0
            for tn in left_t[mt]:
                for k in range(j, len(candidates)):
                    sn = candidates[k]
                    if sn not in used_s and tshape[t_norm[tn]] == sshape[s_norm[sn]]:
                        pair(tn, sn, "position")
                        j = k + 1
                        break

    report.missing = [t_norm[tn] for tn in t_norm if tn not in used_t]
    report.unexpected = [s_norm[sn] for sn in s_norm if sn not in used_s]
    order = {name: i for i, name in enumerate(tshape)}
    report.transferred.sort(key=order.__getitem__)
    report.sliced.sort(key=order.__getitem__)
    return report


# -- loading -------------------------------------------------------------------------------------

def load_weights(model: nn.Module, path_or_state: str | os.PathLike | Mapping[str, Any], strict: bool | None = None,
                 *, state_dict_key: str | None = None, resize: str = "none", positional: bool = True,
                 rename: Sequence[tuple[str, str]] | Callable[[str], str] | None = None,
                 weights_only: bool = True, log_level: int = logging.INFO) -> LoadReport:
    """Copy pretrained tensors into ``model`` and report what was transferred.

    Args:
        model: the target network (may be wrapped in DDP or compiled).
        path_or_state: a checkpoint file, or a checkpoint/state dict already in memory.
        strict: ``True`` exact names and shapes or :class:`WeightsMismatchError`; ``False`` partial
            transfer; ``None`` strict when the checkpoint fits exactly, else partial.
        state_dict_key: entry holding the weights (``"params"`` in NAFNet releases; found
            automatically among :data:`STATE_DICT_KEYS` when omitted).
        resize: ``"none"`` (default) skips tensors whose shapes differ; ``"slice"`` copies the
            leading slice of larger source tensors (heuristic, see the module docstring).
        positional: also pair leftover tensors by shape and order inside matching modules.
        rename: ``[(regex, replacement), ...]`` or a function applied to checkpoint names first.
        weights_only: ``torch.load(weights_only=...)``; keep ``True`` for files you did not make.
    """
    if isinstance(path_or_state, (str, os.PathLike)):
        where = str(path_or_state)
        state = extract_state_dict(read_checkpoint(path_or_state, weights_only=weights_only), state_dict_key,
                                   where=where)
    else:
        where = "<state dict>"
        state = extract_state_dict(path_or_state, state_dict_key, where=where)
    return _load_state(model, state, strict, where=where, resize=resize, positional=positional, rename=rename,
                       log_level=log_level)


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool | None, *, where: str,
                resize: str, positional: bool, rename, log_level: int) -> LoadReport:
    target = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    report = plan_load({k: v.shape for k, v in target.items()}, {k: v.shape for k, v in state.items()},
                       resize=resize if strict is not True else "none", positional=positional and strict is not True,
                       rename=rename, parameter_names=params, source=where)
    exact = (not report.missing and not report.unexpected and not report.shape_mismatched
             and all(how == "name" for how in report.matched_by.values()))
    if strict is True and not exact:
        report.log(log, logging.WARNING)
        raise WeightsMismatchError(
            f"strict load from {where} does not fit the model: {len(report.missing)} missing "
            f"({compact_names(report.missing, 5) or '-'}), {len(report.unexpected)} unexpected "
            f"({compact_names(report.unexpected, 5) or '-'}), {len(report.shape_mismatched)} shape-mismatched "
            f"({'; '.join(map(str, report.shape_mismatched[:3])) or '-'}). Use the preset's exact "
            "architecture settings (see the file's .meta.json 'config'), or load with strict=False for a "
            "partial transfer."
        )
    report.strict = exact and strict is not False
    new_state: dict[str, torch.Tensor] = {}
    for t in report.transferred:
        value = state[report.mapping[t]]
        if t in report.sliced:
            value = value[tuple(slice(0, d) for d in target[t].shape)]
        new_state[t] = value
    with torch.no_grad():
        model.load_state_dict(new_state, strict=report.strict)
    report.log(log, log_level)
    return report


def load_pretrained(model: nn.Module, key: str, strict: bool | None = None, **kwargs: Any) -> LoadReport:
    """Resolve a store key (see :func:`platform.pretrained.resolve`) and load it into ``model``.

    Uses the file's metadata ``state_dict_key`` unless one is given; the report records the
    file's sha256. Store options (``store=``, ``endpoint_url=``...) pass through to ``pull``.
    """
    from platform.pretrained.resolver import pull

    store_kwargs = {k: kwargs.pop(k) for k in ("store", "endpoint_url", "region", "cache", "progress", "hub")
                    if k in kwargs}
    fetched = pull(key, **store_kwargs)
    if kwargs.get("state_dict_key") is None and fetched.meta.state_dict_key:
        kwargs["state_dict_key"] = fetched.meta.state_dict_key
    report = load_weights(model, fetched.path, strict, **kwargs)
    report.source = f"{key} ({fetched.origin})"
    report.sha256 = fetched.meta.sha256
    return report

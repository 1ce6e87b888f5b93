"""Search-space YAML files: loading, the ``quick`` profile, validation.

A search space is a readable YAML file (see ``search_spaces/nafnet_fewshot.yaml``). Every
leaf is either a literal or a *searchable* value written as a one-key mapping::

    lr: {loguniform: [1.0e-4, 3.0e-3]}
    size: {choice: [small, base]}
    l1: {uniform: [0.5, 1.0]}

Conditional values (the search helper's syntax, resolved by :mod:`platform.search.conditional`
into an Optuna define-by-run space)::

    size: {switch: model.architecture, cases: {nafnet: {choice: [small, base]},
                                                convnext_unet: {choice: [nano, tiny]}}}
    lpips: {optional: {uniform: [0.05, 0.5]}}      # searched on/off; its λ only when on (off: 0)

Validation is done by hand (rather than with a schema library) so that each message names
the file, the dotted key, the bad value and the allowed values in one sentence.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from platform.errors import ConfigError
from platform.frame_size import RESOLUTIONS, parse_resolution

REPO_ROOT = Path(__file__).resolve().parent.parent
SEARCH_SPACES_DIR = REPO_ROOT / "search_spaces"

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "quniform", "randint", "grid")


# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Field:
    """One key of the schema."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    searchable: bool = True
    allowed: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None
    doc: str = ""


def _non_negative(v):
    return "must be >= 0" if v < 0 else None


def _positive(v):
    return "must be > 0" if v <= 0 else None


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _safe_name(v):
    """Search names become folder, MLflow experiment and registered-model names."""
    if not isinstance(v, str) or not SAFE_NAME.match(v) or ".." in v:
        return ("must be 1-100 characters of letters, digits, '.', '_' and '-', starting with a letter or "
                "digit (it names folders and the registered model)")
    return None


def check_name(name: str, where: str) -> str:
    """``name`` if it is a safe search name, else a :class:`ConfigError` naming ``where``."""
    err = _safe_name(name)
    if err:
        raise ConfigError(f"{where}: the search name {name!r} {err}; e.g. nafnet_fewshot-v2.")
    return name


def _frame_size(v):
    try:
        if v is not None:
            parse_resolution(v)
    except ConfigError:
        return f"must be a frame size: {', '.join(RESOLUTIONS)} or WIDTHxHEIGHT (e.g. 640x360), or null"
    return None


def _fraction(v):
    return "must be in [0, 1]" if not 0 <= v <= 1 else None


NUM = (int, float)
OPEN = object()  # marker: a mapping whose keys are free (validated by a registry)

SCHEMA: dict[str, Any] = {
    "name": Field((str,), required=True, searchable=False, check=_safe_name, doc="search / MLflow experiment / registered model name"),
    "description": Field((str,), default="", searchable=False),
    "task": {
        "name": Field((str,), default="img2img", searchable=False),
        "data": Field((str,), default="sample:vfx_grade", searchable=False,
                      doc="a folder, or sample:<name> for a bundled sample data set"),
        "crop": Field((int,), default=256, check=_positive),
        "crops_per_epoch": Field((int,), default=512, check=_positive),
        "batch_size": Field((int,), default=8, check=_positive),
        "val_holdout": Field((int, list), default=2, searchable=False,
                             doc="number of held-out pairs, or a list of file stems"),
        "val_max_side": Field((int, type(None)), default=None, searchable=False,
                              doc="downscale validation frames whose long side exceeds this (None: native)"),
        "augment": {
            "hflip": Field(NUM, default=0.5, check=_fraction),
            "vflip": Field(NUM, default=0.5, check=_fraction),
            "rotate90": Field(NUM, default=0.5, check=_fraction),
            # --- data & tasks helper: see platform/data/augment.py for the meaning of each key
            "shift_scale_rotate": {
                "p": Field(NUM, default=0.0, check=_fraction),
                "shift": Field(NUM, default=0.0625, check=_fraction, doc="max shift, fraction of the crop"),
                "scale": Field(NUM, default=0.1, check=_fraction, doc="scale in [1 - scale, 1 + scale]"),
                "rotate": Field(NUM, default=15.0, check=_non_negative, doc="max rotation in degrees"),
            },
            "brightness_contrast": {
                "p": Field(NUM, default=0.0, check=_fraction),
                "brightness": Field(NUM, default=0.1, check=_fraction),
                "contrast": Field(NUM, default=0.1, check=_fraction),
            },
            "hue_saturation": {
                "p": Field(NUM, default=0.0, check=_fraction),
                "hue": Field(NUM, default=5.0, check=_non_negative),
                "saturation": Field(NUM, default=10.0, check=_non_negative),
                "value": Field(NUM, default=5.0, check=_non_negative),
            },
            "blur": {
                "p": Field(NUM, default=0.0, check=_fraction),
                "max_kernel": Field((int,), default=5, check=lambda v: "must be >= 3" if v < 3 else None),
            },
            "noise": {
                "p": Field(NUM, default=0.0, check=_fraction),
                "std": Field(NUM, default=0.03, check=_fraction, doc="max noise std (images in [0, 1])"),
            },
            "photometric_on": Field((str, type(None)), default=None, allowed=("input", "both", None),
                                    doc="photometric jitter on the input only or on input and target (null: task default)"),
            "offline_copies": Field((int,), default=0, check=lambda v: None if 0 <= v <= 7 else "must be in 0..7",
                                    doc="offline data multiplier: +hflip, +vflip, +rot90, ... copies of each training item"),
            "extra": Field((list,), default=[], searchable=False,
                           doc="more albumentations transforms: [{type: CLAHE, p: 0.2, clip_limit: 2.0}]"),
        },
        # --- data & tasks helper additions (platform/data/, platform/tasks/)
        "val_fraction": Field(NUM + (type(None),), default=None, searchable=False, check=_fraction,
                              doc="hold out this fraction of the items (drawn with split_seed) instead of val_holdout"),
        "folds": Field((int, type(None)), default=None, searchable=False,
                       check=lambda v: "must be >= 2 (or null)" if v < 2 else None,
                       doc="k-fold cross-validation: the items are dealt into this many folds"),
        "fold": Field((int,), default=0, check=_non_negative,
                      doc="the validation fold (0..folds-1); search.repeat: {over: fold, k} scores the mean over folds"),
        "split_seed": Field((int,), default=0, searchable=False, doc="seed of val_fraction / k-fold draws"),
        "transfer": Field((str, dict), default="identity", searchable=False,
                          doc="stored values -> network [0, 1]: identity, linear, srgb, log or {name: ..., options}"),
        "alpha": Field((str,), default="error", searchable=False, allowed=("error", "drop", "composite", "keep"),
                       doc="images with an alpha channel: error (unless opaque), drop, composite (premultiply), keep (RGBA)"),
        "val_sequence": Field((dict, list, type(None)), default=None, searchable=False,
                              doc="img2img: {input: video-or-frame-folder, target: ...} validated frame by frame (+ flicker)"),
        "val_tile": Field((int, type(None)), default=None, searchable=False,
                          doc="validation tile size for large frames (null: chosen from free memory)"),
        "val_tile_overlap": Field((int, type(None)), default=None, searchable=False,
                                  doc="overlap between validation tiles (null: the inference default)"),
        "unlabelled": Field((str, type(None)), default=None, searchable=False,
                            doc="distillation: a folder of ungraded frames of the shot, or a video (python -m "
                                "platform.distill); the teacher's outputs on them become extra training targets"),
        "unlabelled_max_frames": Field((int, type(None)), default=None, searchable=False, check=_positive,
                                       doc="distillation: read at most this many unlabelled frames (null: all)"),
        "level_weights": {
            "binary": Field(NUM, default=0.2, check=_non_negative),
            "coarse": Field(NUM, default=0.3, check=_non_negative),
            "fine": Field(NUM, default=0.5, check=_non_negative),
        },
    },
    "model": {
        "architecture": Field((str,), default="nafnet"),
        "size": Field((str, type(None)), default=None),
        "options": Field((dict,), default={}, searchable=False,
                         doc="extra keyword arguments for the architecture's factory"),
    },
    "loss": OPEN,  # component name -> weight (validated against the loss registry)
    "optimizer": {
        "name": Field((str,), default="adamw", allowed=("adamw",)),
        "lr": Field(NUM, default=1e-3, check=_positive),
        "weight_decay": Field(NUM, default=1e-4, check=_non_negative),
        "betas": Field((list,), default=[0.9, 0.9], searchable=False),
        "grad_clip": Field(NUM + (type(None),), default=1.0, check=_non_negative,
                           doc="clip the gradient norm to this (0 or null: no clipping; negative is refused)"),
    },
    "schedule": {
        "name": Field((str,), default="cosine", allowed=("cosine", "constant")),
        "warmup_epochs": Field(NUM, default=1, check=_non_negative),
        "min_lr": Field(NUM, default=1e-7, check=_non_negative),
    },
    "train": {
        "epochs": Field((int,), default=20, searchable=False, check=_positive),
        "precision": Field((str,), default="auto", allowed=("auto", "fp32", "bf16", "fp16")),
        "channels_last": Field((str, bool), default="auto"),
        "device_crops": Field((str,), default="auto", searchable=False, allowed=("auto", "on", "off"),
                              doc="cut training crops on the GPU from frames held in its memory (auto: on CUDA "
                                  "when the augmentation is flips/rot90 only)"),
        "compile": Field((bool,), default=False, searchable=False,
                         doc="torch.compile the model (CUDA; compile time is reported separately)"),
        "seed": Field((int,), default=0, searchable=False),
        "image_every": Field((int,), default=5, searchable=False, check=_positive,
                             doc="log validation image grids every N epochs (and at the last)"),
        "max_failures": Field((int,), default=1, searchable=False, check=_non_negative),
        "time_budget_s": Field(NUM + (type(None),), default=None, searchable=False, check=_positive,
                               doc="wall-clock seconds for a trial's training and validation (set by a "
                                   "time-boxed search): when the machine runs slower than planned, the "
                                   "remaining epochs take fewer steps and the learning-rate schedule ends on "
                                   "time (null: every planned step)"),
    },
    # Fine-tuning from the pretrained store (platform.pretrained): the weights are loaded into the
    # trial's model (strict when they fit exactly, else a partial load that reports its counts);
    # the parameters that received them form the "backbone" group (platform.pretrained.finetune).
    "pretrained": {
        "key": Field((str, type(None)), default=None, searchable=False,
                     doc="store key of the weights to start from, e.g. layer_2/nafnet/NAFNet-SIDD-width32.pth "
                         "or timm/convnext_tiny.pth (null: train from scratch)"),
        "strict": Field((bool, type(None)), default=None, searchable=False,
                        doc="true: exact names and shapes; false: partial; null: strict when the file fits"),
        "resize": Field((str,), default="none", searchable=False, allowed=("none", "slice"),
                        doc="slice: copy the leading slice of larger tensors (a heuristic, see docs/pretrained.md)"),
        "backbone_lr_factor": Field(NUM, default=0.1, check=_non_negative,
                                    doc="learning rate of the pretrained parameters = lr x this"),
        "head_lr_factor": Field(NUM, default=1.0, check=_non_negative,
                                doc="learning rate of the new parameters = lr x this"),
        "freeze_epochs": Field((int,), default=0, check=_non_negative,
                               doc="pretrained parameters frozen for the first N epochs"),
        "warmup_epochs": Field((int,), default=0, check=_non_negative,
                               doc="then their learning rate ramps up over N epochs"),
        "freeze_mode": Field((str,), default="requires_grad", searchable=False, allowed=("requires_grad", "lr"),
                             doc="requires_grad: no gradients while frozen; lr: learning rate 0 (DDP trials use lr)"),
    },
    "search": {
        "metric": Field((str,), default="val_psnr", searchable=False),
        "mode": Field((str,), default="max", searchable=False, allowed=("max", "min")),
        "num_trials": Field((int,), default=20, searchable=False, check=_positive),
        "max_concurrent": Field((int,), default=4, searchable=False, check=_positive),
        "reuse_actors": Field((bool,), default=True, searchable=False,
                              doc="start a trial in the worker process of a finished one with the same resources "
                                  "(saves the process start and imports: ~5 s per CPU trial); false gives every "
                                  "trial a fresh process"),
        "scheduler": {
            "name": Field((str,), default="asha", searchable=False,
                          allowed=("asha", "hyperband", "bohb", "pbt", "fifo"),
                          doc="asha (default), hyperband, bohb (needs the optional hpbandster + ConfigSpace), pbt, fifo"),
            "time_attr": Field((str,), default="training_iteration", searchable=False,
                               allowed=("training_iteration", "time_total_s")),
            "grace_period": Field((int,), default=2, searchable=False, check=_positive),
            "reduction_factor": Field(NUM, default=3, searchable=False,
                                      check=lambda v: "must be > 1" if v <= 1 else None),
            "max_t": Field((int, type(None)), default=None, searchable=False,
                           doc="defaults to train.epochs"),
            # --- search helper: population based training
            "perturbation_interval": Field((int,), default=2, searchable=False, check=_positive,
                                           doc="pbt: epochs between exploit/explore steps"),
            "quantile_fraction": Field(NUM, default=0.25, searchable=False,
                                       check=lambda v: None if 0 < v <= 0.5 else "must be in (0, 0.5]"),
            "resample_probability": Field(NUM, default=0.25, searchable=False, check=_fraction),
            "mutate": Field((list, type(None)), default=None, searchable=False,
                            doc="pbt: dotted keys to mutate (default: every continuous searched key)"),
        },
        "searcher": {
            "name": Field((str,), default="optuna", searchable=False, allowed=("optuna", "random", "grid"),
                          doc="optuna (TPE by default), random (Optuna's random sampler), grid (every combination)"),
            "sampler": Field((str,), default="tpe", searchable=False, allowed=("tpe", "random")),
            "seed": Field((int,), default=0, searchable=False),
            "n_startup_trials": Field((int,), default=5, searchable=False, check=_non_negative),
            "grid_points": Field((int,), default=3, searchable=False, check=_positive,
                                 doc="grid: points per continuous range (log-spaced for loguniform)"),
        },
        # --- search helper additions (platform/search/)
        "points_to_evaluate": Field((list,), default=[], searchable=False,
                                    doc="known-good configs tried first: [{preset: NAME} | {dotted.key: value, ...}]"),
        "repeat": {
            "over": Field((str,), default="none", searchable=False, allowed=("none", "seed", "fold"),
                          doc="score a trial by the mean over k seeds or k folds (trainers run in lockstep)"),
            "k": Field((int,), default=1, searchable=False, check=_positive),
        },
        "cost": {
            "metric": Field((str,), default="none", searchable=False, allowed=("none", "params", "latency"),
                            doc="a cost measured per trial: parameters (millions) or inference latency (ms)"),
            "optimize": Field((bool,), default=False, searchable=False,
                              doc="multi-objective search (quality and cost); promotion still uses the metric"),
            "latency_size": Field((int,), default=256, searchable=False, check=_positive,
                                  doc="square input side for the latency measurement"),
        },
        "budget": {
            "usd": Field(NUM + (type(None),), default=None, searchable=False, check=_positive,
                         doc="stop launching trials when the spend would pass this many dollars"),
            "price_per_gpu_hour": Field(NUM, default=0.0, searchable=False, check=_non_negative),
            "price_per_cpu_hour": Field(NUM, default=0.0, searchable=False, check=_non_negative),
            "time_s": Field(NUM + (type(None),), default=None, searchable=False, check=_positive,
                            doc="stop launching trials after this many seconds of search"),
            "max_trials": Field((int, type(None)), default=None, searchable=False, check=_positive,
                                doc="cap on the number of trials (the lower of this and num_trials)"),
        },
        "checkpoints": {
            "keep_best": Field((int,), default=2, searchable=False, check=_positive,
                               doc="per trial keep the best N checkpoints and the latest; delete the rest"),
        },
        "report": Field((bool,), default=True, searchable=False,
                        doc="write the HTML report at the end of the search and log it to MLflow"),
        "timebox": {
            "seconds": Field(NUM + (type(None),), default=None, searchable=False, check=_positive,
                             doc="wall-clock budget of the whole search: trials, epochs and crops are sized to it "
                                 "from a measured step time (--time-budget; null: as written)"),
            "min_steps": Field((int,), default=2000, searchable=False, check=_positive,
                               doc="the crop is the largest at which a trial still makes this many steps"),
            "waves": Field((int,), default=1, searchable=False, check=_positive,
                           doc="trials = the trials that run at once x waves"),
            "overhead_s": Field(NUM, default=40.0, searchable=False, check=_non_negative,
                                doc="seconds of the budget kept for Ray's start, each trial's start-up, "
                                    "registration and the report"),
        },
    },
    # Promotion to the registry's `champion` alias (platform.champion): only above the quality
    # floors (platform.floors) and the current champion, re-evaluated on the same data.
    "promotion": {
        "min_gain": Field(NUM + (type(None),), default=None, searchable=False, check=_non_negative,
                          doc="margin over the best floor (null: the metric's default, e.g. 0.5 dB for PSNR)"),
        "floors": Field((bool,), default=True, searchable=False,
                        doc="score the classical baselines (identity, colour transforms, majority class...)"),
    },
    "resources": {
        "workers": Field((int,), default=1, searchable=False, check=_positive),
        "cpus_per_worker": Field(NUM, default=1, searchable=False, check=_positive),
        "gpus_per_worker": Field(NUM, default=0, searchable=False, check=_non_negative),
        "mode": Field((str,), default="auto", searchable=False, allowed=("auto", "train", "inprocess"),
                      doc="auto: single-worker trials run in the Tune trial's process, DDP trials as TorchTrainer"),
        # --- search helper additions: GPU packing
        "pack": Field((bool,), default=True, searchable=False,
                      doc="raise a trial's GPU fraction to fit its estimated peak memory"),
        "gpu_memory_gb": Field(NUM + (type(None),), default=None, searchable=False, check=_positive,
                               doc="memory of one GPU for packing (default: read from CUDA in the driver)"),
        "memory_headroom": Field(NUM, default=1.25, searchable=False,
                                 check=lambda v: None if v >= 1 else "must be >= 1"),
    },
    # Warm start from earlier searches (platform.search.warmstart, platform.search.warminit): their
    # best configurations first, their trials fed to Optuna's sampler, their champion's weights.
    "warm_start": {
        "searches": Field((list,), default=[], searchable=False,
                          doc="earlier searches (MLflow parent run id, experiment or space name); --warm-start"),
        "points": Field((int,), default=1, searchable=False, check=_non_negative,
                        doc="best configurations of each earlier search evaluated first"),
        "trials": Field((bool,), default=True, searchable=False,
                        doc="give the earlier trials to Optuna's sampler as completed trials"),
        "weights": Field((str, type(None)), default=None, searchable=False,
                         doc="models:/NAME@ALIAS whose weights initialise matching trials; --init-from"),
        "init": Field((str,), default="champion", allowed=("scratch", "champion"),
                      doc="champion (start from the weights) or scratch; {choice: [scratch, champion]} searches it"),
    },
    # Knowledge distillation (platform.distill): a registered teacher labels the shot's frames once
    # (cached on disk); trials learn from its outputs as well as from the labelled pairs.
    "distill": {
        "teacher": Field((str, type(None)), default=None, searchable=False,
                         doc="models:/NAME/VERSION of the teacher (set by python -m platform.distill; null: none)"),
        "weight": Field(NUM, default=1.0, check=_non_negative,
                        doc="λ: loss = ground-truth loss (labelled crops) + λ x distillation loss (every crop)"),
        "temperature": Field(NUM, default=4.0, check=_positive,
                             doc="segmentation: soft labels softmax(logits / T), KL scaled by T² (Hinton et al.)"),
        "output_loss": Field((str,), default="l1", allowed=("l1", "mse", "charbonnier"),
                             doc="image-to-image and matting: how the student's output is scored against the teacher's"),
        "labelled_fraction": Field(NUM, default=0.5, check=_fraction,
                                   doc="share of the training crops cut from labelled frames (the rest: unlabelled)"),
        "cache": Field((str, type(None)), default=None, searchable=False,
                       doc="folder of the teacher-output cache (default: .cache/distill)"),
    },
    # Deployable students (platform.compress): structured pruning of the warm-started champion.
    "compress": {
        "prune": {
            "sparsity": Field(NUM, default=0.0, check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
                              doc="fraction of each prunable layer's channels removed (torch-pruning) from the "
                                  "warm-started weights before training; 0: no pruning"),
        },
        "pareto_frame": Field((str, type(None)), default="1080p", searchable=False, check=_frame_size,
                              doc="student searches (distillation, pruning): the frame size (1080p, 4k or WxH) on "
                                  "which the teacher and every student are timed for the report's quality-vs-cost "
                                  "table (compress/pareto.json); null: not measured"),
    },
    "show": Field((str, type(None)), default=None, searchable=False, check=_safe_name,
                  doc="the show this shot belongs to: python -m platform.report --show NAME lists its shots"),
    "quick": Field((dict,), default={}, searchable=False,
                   doc="overrides applied by --quick (same keys as the rest of the file)"),
}


# --------------------------------------------------------------------------- helpers
def is_searchable(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def is_conditional(value: Any) -> bool:
    """``{switch: KEY, cases: {...}[, default: ...]}`` or ``{optional: VALUE[, off: 0]}``."""
    if not isinstance(value, dict):
        return False
    if "switch" in value and "cases" in value and set(value) <= {"switch", "cases", "default"}:
        return True
    return "optional" in value and set(value) <= {"optional", "off"}


def is_search_node(value: Any) -> bool:
    """A searchable leaf or a conditional node (anything a searcher resolves)."""
    return is_searchable(value) or is_conditional(value)


def possible_values(node: Any) -> list[Any]:
    """Every literal a (possibly searched or conditional) node can take; ranges give their bounds."""
    if is_searchable(node):
        _kind, args = next(iter(node.items()))
        return list(args)
    if is_conditional(node):
        if "switch" in node:
            out = []
            for v in list((node.get("cases") or {}).values()) + ([node["default"]] if "default" in node else []):
                out.extend(possible_values(v))
            return out
        return possible_values(node["optional"]) + [node.get("off", 0.0)]
    return [node]


def get_path(cfg: dict, dotted: str) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``; raises KeyError when absent."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if (isinstance(value, dict) and isinstance(out.get(key), dict) and not is_search_node(value)
                and not is_search_node(out[key])):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str):
        raise ConfigError(f"{self.source}: `{key}` {message}")

    def check_value(self, key: str, field: Field, value: Any):
        if isinstance(value, bool) and bool not in field.types:
            self.fail(key, f"is {value!r}; expected {_type_names(field.types)}.")
        if isinstance(value, int) and not isinstance(value, bool) and float in field.types:
            pass
        elif not isinstance(value, field.types):
            self.fail(key, f"is {value!r} ({type(value).__name__}); expected {_type_names(field.types)}.")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(key, f"is {value!r}; it must be a finite number (NaN and infinity would switch the "
                           "setting off or break training).")
        if field.allowed is not None and value not in field.allowed:
            self.fail(key, f"is {value!r}; allowed values: {', '.join(map(str, field.allowed))}.")
        if field.check is not None and (isinstance(value, str) or isinstance(value, (int, float))
                                        and not isinstance(value, bool)):
            err = field.check(value)
            if err:
                self.fail(key, f"is {value!r}; it {err}.")

    def check_distribution(self, key: str, dist: dict, field: Field | None, value_check=None):
        kind, args = next(iter(dist.items()))
        if field is not None and not field.searchable:
            self.fail(key, f"cannot be searched (got {{{kind}: ...}}); give a single value.")
        if kind in ("choice", "grid"):
            if not isinstance(args, list) or not args:
                self.fail(key, f"{{{kind}: ...}} needs a non-empty list of options, got {args!r}.")
            for option in args:
                if field is not None:
                    self.check_value(key, field, option)
                if value_check:
                    value_check(key, option)
            return
        if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
            self.fail(key, f"{{{kind}: [low, high]}} needs two numbers, got {args!r}.")
        low, high = args
        if low > high:
            self.fail(key, f"{{{kind}: [{low}, {high}]}} has low > high.")
        if kind == "loguniform" and low <= 0:
            self.fail(key, f"{{loguniform: [{low}, {high}]}} needs low > 0.")
        for bound in (low, high):
            if field is not None:
                self.check_value(key, field, float(bound) if float in field.types else bound)
            if value_check:
                value_check(key, bound)

    def check_node(self, key: str, node: Any, field: Field | None, value_check=None):
        """A literal, a distribution or a conditional (as a field value or a case of a switch)."""
        if is_conditional(node):
            self.check_conditional(key, node, field, value_check)
        elif is_searchable(node):
            self.check_distribution(key, node, field, value_check)
        elif isinstance(node, dict) and (field is None or dict in field.types):
            return  # a nested mapping (e.g. model.options for one architecture); its leaves are free
        else:
            if field is not None:
                self.check_value(key, field, node)
            if value_check:
                value_check(key, node)

    def check_conditional(self, key: str, node: dict, field: Field | None, value_check=None):
        if field is not None and not field.searchable and dict not in field.types:
            self.fail(key, "cannot be searched or made conditional; give a single value.")
        if "optional" in node:
            self.check_node(key, node["optional"], field, value_check)
            if "off" in node:
                self.check_node(f"{key}.off", node["off"], field, value_check)
            return
        ref, cases = node["switch"], node["cases"]
        if not isinstance(ref, str) or not ref:
            self.fail(key, f"{{switch: ...}} needs the dotted key it depends on (e.g. model.architecture), got {ref!r}.")
        if not isinstance(cases, dict) or not cases:
            self.fail(key, "{switch: ..., cases: ...} needs a non-empty mapping of cases, e.g. "
                      "{nafnet: {choice: [small, base]}, convnext_unet: {choice: [nano, tiny]}}.")
        for case, value in cases.items():
            self.check_node(f"{key}[{case}]", value, field, value_check)
        if "default" in node:
            self.check_node(f"{key}[default]", node["default"], field, value_check)

    def walk(self, data: dict, schema: dict, prefix: str = "", partial: bool = False) -> dict:
        if not isinstance(data, dict):
            self.fail(prefix.rstrip(".") or "<root>", f"must be a mapping, got {type(data).__name__}.")
        out: dict[str, Any] = {}
        for key in data:
            if key not in schema:
                allowed = ", ".join(schema)
                self.fail(f"{prefix}{key}", f"is not a known key. Allowed keys here: {allowed}.")
        for key, spec in schema.items():
            dotted = f"{prefix}{key}"
            present = key in data
            value = data.get(key)
            if spec is OPEN:
                out[key] = self.walk_loss(value or {}, dotted) if present else {}
            elif isinstance(spec, dict):
                out[key] = self.walk(value if present and value is not None else {}, spec, dotted + ".", partial)
            else:
                if not present:
                    if spec.required and not partial:
                        self.fail(dotted, "is required.")
                    if not partial:
                        out[key] = copy.deepcopy(spec.default)
                    continue
                if is_conditional(value):
                    self.check_conditional(dotted, value, spec)
                elif is_searchable(value):
                    self.check_distribution(dotted, value, spec)
                else:
                    self.check_value(dotted, spec, value)
                out[key] = value
        return out

    def walk_loss(self, loss: dict, prefix: str) -> dict:
        from platform.losses import LOSSES

        if not isinstance(loss, dict):
            self.fail(prefix, "must map loss components to weights, e.g. {l1: 1.0, ssim: 0.2}.")

        def weight_check(key, w):
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                self.fail(key, f"weight is {w!r}; expected a number >= 0.")
            if not math.isfinite(w) or w < 0:
                self.fail(key, f"weight is {w}; loss weights (λ) must be >= 0 (0 disables the component).")

        for name, value in loss.items():
            key = f"{prefix}.{name}"
            if name not in LOSSES:
                self.fail(key, f"is {name!r}, an unknown loss component. "
                          + LOSSES.unknown_message(name).split(". ", 1)[-1])
            if is_search_node(value):
                self.check_node(key, value, None, weight_check)
            elif isinstance(value, dict):
                w = value.get("weight", 1.0)
                if is_search_node(w):
                    self.check_node(key + ".weight", w, None, weight_check)
                else:
                    weight_check(key + ".weight", w)
            else:
                weight_check(key, value)
        return dict(loss)


def _check_names(cfg: dict, source: str) -> None:
    """Registry-backed checks: architecture, size and task names (possibly inside a choice)."""
    from platform.models import MODELS
    from platform.tasks import TASKS

    v = _Validator(source)
    if cfg["task"]["name"] not in TASKS:
        v.fail("task.name", f"is {cfg['task']['name']!r}, an unknown task. "
               + TASKS.unknown_message(cfg["task"]["name"]).split(". ", 1)[-1])
    arch = cfg["model"]["architecture"]
    archs = list(dict.fromkeys(possible_values(arch)))
    for a in archs:
        if a not in MODELS:
            v.fail("model.architecture", f"is {a!r}, an unknown architecture. "
                   + MODELS.unknown_message(a).split(". ", 1)[-1])
    size = cfg["model"]["size"]
    if is_conditional(size) and size.get("switch") == "model.architecture":
        # A size per architecture: every case must be a size of its own architecture.
        for a, case in size["cases"].items():
            known = tuple(MODELS.meta(a).get("sizes", ())) if a in MODELS else ()
            for s in possible_values(case):
                if s is not None and known and s not in known:
                    v.fail(f"model.size[{a}]", f"is {s!r}; architecture {a!r} has sizes: {', '.join(known)}.")
                if s is not None and not known and a in MODELS:
                    v.fail(f"model.size[{a}]", f"is {s!r}; architecture {a!r} has no named sizes (use null).")
        return
    sizes = possible_values(size)
    for a in archs:
        known = tuple(MODELS.meta(a).get("sizes", ()))
        for s in sizes:
            if s is not None and known and s not in known and len(archs) == 1:
                v.fail("model.size", f"is {s!r}; architecture {a!r} has sizes: {', '.join(known)}.")


# --------------------------------------------------------------------------- API
@dataclass
class SearchSpec:
    """A validated search space (searchable leaves still unresolved)."""

    config: dict
    source: Path

    @property
    def name(self) -> str:
        return self.config["name"]

    def __getitem__(self, key):
        return self.config[key]


def resolve_space_path(space: str) -> Path:
    candidate = Path(space)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
    else:
        path = SEARCH_SPACES_DIR / f"{space}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SEARCH_SPACES_DIR.glob("*.yaml"))
        raise ConfigError(
            f"search space {space!r} not found (looked for {path}). Give a file in search_spaces/ "
            f"without .yaml ({', '.join(known)}) or a path to a YAML file."
        )
    return path


def load_spec(space: str | Path, quick: bool = False, overrides: dict | None = None) -> SearchSpec:
    """Load, merge the quick profile (if asked) and overrides, and validate a search space."""
    path = resolve_space_path(str(space))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: is not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections (name, task, model, loss, ...).")
    validator = _Validator(str(path))
    quick_cfg = raw.get("quick") or {}
    if quick_cfg:
        _Validator(f"{path} (quick profile)").walk(quick_cfg, {k: v for k, v in SCHEMA.items() if k != "quick"},
                                                   partial=True)
    merged = deep_merge(raw, quick_cfg) if quick else dict(raw)
    if overrides:
        merged = deep_merge(merged, overrides)
    cfg = validator.walk(merged, SCHEMA)
    sched = cfg["search"]["scheduler"]
    if sched["max_t"] is None:
        sched["max_t"] = cfg["train"]["epochs"]
    # A grace period longer than the trials themselves means "never stop early".
    sched["grace_period"] = min(sched["grace_period"], sched["max_t"])
    if not cfg["loss"]:
        validator.fail("loss", "is empty; give at least one component with a weight, e.g. {l1: 1.0}.")
    _check_names(cfg, str(path))
    _check_switches(cfg, str(path))
    _check_warm_start(cfg, str(path))
    return SearchSpec(config=cfg, source=path)


def _check_warm_start(cfg: dict, source: str) -> None:
    """``warm_start.searches`` holds names; ``warm_start.weights`` a model URI (resolved in the driver)."""
    v = _Validator(source)
    for i, ref in enumerate(cfg["warm_start"]["searches"]):
        if not isinstance(ref, str) or not ref.strip():
            v.fail(f"warm_start.searches[{i}]", f"is {ref!r}; give an earlier search: its MLflow parent run id, "
                                               "experiment name or space name.")


def _walk_nodes(node: Any, prefix: str = ""):
    """(dotted key, node) for every conditional node, cases included."""
    if is_conditional(node):
        yield prefix, node
        children = list(node["cases"].items()) if "switch" in node else [("", node["optional"])]
        if "default" in node:
            children.append(("default", node["default"]))
        for _, child in children:
            yield from _walk_nodes(child, prefix)
    elif isinstance(node, dict) and not is_searchable(node):
        for k, v in node.items():
            yield from _walk_nodes(v, f"{prefix}.{k}" if prefix else str(k))


def _check_switches(cfg: dict, source: str) -> None:
    """Every ``switch`` names an existing, non-conditional key and covers each of its values."""
    v = _Validator(source)
    sections = {k: cfg[k] for k in ("task", "model", "loss", "optimizer", "schedule", "train", "pretrained")}
    for key, node in _walk_nodes(sections):
        if "switch" not in node:
            continue
        ref = node["switch"]
        try:
            target = get_path(sections, ref)
        except KeyError:
            v.fail(key, f"switches on {ref!r}, which is not a key of this file (e.g. model.architecture).")
        if ref == key or key.startswith(ref + "."):
            v.fail(key, f"switches on {ref!r}, which contains it.")
        if is_conditional(target) and "switch" in target:
            v.fail(key, f"switches on {ref!r}, which is itself a switch; switch on a plain or {{choice: ...}} key.")
        if is_searchable(target) and next(iter(target)) not in ("choice", "grid"):
            v.fail(key, f"switches on {ref!r}, a continuous range; switch on a fixed value or a {{choice: ...}}.")
        options = [str(o) for o in possible_values(target)]
        cases = [str(c) for c in node["cases"]]
        unknown = [c for c in cases if c not in options]
        if unknown:
            v.fail(key, f"has case(s) {', '.join(unknown)}, which {ref} cannot take (its values: {', '.join(options)}).")
        missing = [o for o in options if o not in cases]
        if missing and "default" not in node:
            v.fail(key, f"has no case for {ref} = {', '.join(missing)}; add those cases or a `default:`.")

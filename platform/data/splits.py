"""Train / validation splits of a few-shot data set, by item name.

Three ways, chosen by the ``task`` config (first match wins):

* ``folds: k`` (k >= 2) with ``fold: i`` (0 <= i < k): k-fold cross-validation. The items are
  shuffled once with ``split_seed`` and dealt into k folds of near-equal size; fold ``i`` is the
  validation set. A search scores a configuration over folds by running one trial per fold
  (``fold: {grid: [0, 1, ..., k-1]}``) and averaging ``val_*`` over them.
* ``val_fraction: f`` (0 < f < 1): ``round(f * n)`` items (at least 1) drawn with ``split_seed``.
* ``val_holdout``: a number (the *last* n items in name order, the historical behaviour) or a
  list of item names.

Every split is a pure function of the names and the config, so every DDP worker and every
trial of a search sees the same split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from platform.errors import DataError


def kfold_indices(n: int, folds: int, seed: int = 0) -> list[list[int]]:
    """Item indices of each of ``folds`` folds (shuffled with ``seed``, sizes differ by at most 1)."""
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


def split_names(names: Sequence[str], *, holdout: int | Sequence[str] | None = 2, fraction: float | None = None,
                folds: int | None = None, fold: int | None = 0, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_names, val_names)`` in the input order. Raises DataError for impossible splits."""
    names = list(names)
    n = len(names)
    if n == 0:
        raise DataError("the data set is empty: nothing to split into training and validation.")
    if len(set(names)) != n:
        dup = sorted({x for x in names if names.count(x) > 1})
        raise DataError(f"item names must be unique to split the data set; repeated: {', '.join(dup)}.")
    if folds is not None and int(folds) > 1:
        folds, fold = int(folds), int(fold or 0)
        if folds > n:
            raise DataError(f"task.folds is {folds} but the data set has only {n} items; use at most {n} folds.")
        if not 0 <= fold < folds:
            raise DataError(f"task.fold is {fold}; with task.folds = {folds} it must be between 0 and {folds - 1}.")
        val_idx = set(kfold_indices(n, folds, seed)[fold])
        val = {names[i] for i in val_idx}
    elif fraction is not None:
        if not 0 < float(fraction) < 1:
            raise DataError(f"task.val_fraction is {fraction}; it must be strictly between 0 and 1.")
        k = max(1, round(float(fraction) * n))
        if k >= n:
            raise DataError(f"task.val_fraction {fraction} of {n} items holds out all of them; lower it or add data.")
        val = {names[i] for i in np.random.default_rng(seed).permutation(n)[:k]}
    elif isinstance(holdout, (list, tuple)):
        missing = [x for x in holdout if x not in names]
        if missing:
            raise DataError(f"task.val_holdout names {', '.join(map(str, missing))}, which are not in the data set "
                            f"(items: {', '.join(names)}).")
        val = set(holdout)
        if len(val) >= n:
            raise DataError("task.val_holdout holds out every item; leave at least one to train on.")
    else:
        holdout = int(holdout or 0)
        if holdout < 0 or holdout >= n:
            raise DataError(f"task.val_holdout is {holdout} but the data set has {n} items; hold out between 0 and "
                            f"{n - 1} so that something is left to train on.")
        val = set(names[n - holdout:]) if holdout else set()
    return [x for x in names if x not in val], [x for x in names if x in val]


def split_from_config(names: Sequence[str], config: dict) -> tuple[list[str], list[str]]:
    """:func:`split_names` with the keys of a ``task`` config section."""
    return split_names(names, holdout=config.get("val_holdout", 2), fraction=config.get("val_fraction"),
                       folds=config.get("folds"), fold=config.get("fold", 0), seed=int(config.get("split_seed", 0)))

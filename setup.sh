#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with the pinned stack of requirements.txt.
# Idempotent and fast when nothing changed (a stamp records the installed requirements).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing requirements into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  .venv/bin/python -c "import torch, ray, mlflow, timm, segmentation_models_pytorch, lpips, optuna" \
    || { echo "setup: the installation is incomplete (see the pip messages above)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

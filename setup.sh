#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with the pinned stack of requirements.txt (the
# runtime) and requirements-test.txt (tests and lint; skipped where the file is not shipped, as on
# cluster nodes). Idempotent and fast when nothing changed (a stamp records the installed files).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
reqs=(requirements.txt)
[ -f requirements-test.txt ] && reqs+=(requirements-test.txt)
args=()
for r in "${reqs[@]}"; do args+=(-r "$r"); done
stamp=.venv/.requirements.sha256
# With requirements.txt alone this equals `sha256sum requirements.txt` (clusters/Dockerfile's stamp).
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing ${reqs[*]} into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check "${args[@]}" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  .venv/bin/python -c "import torch, ray, mlflow, timm, segmentation_models_pytorch, lpips, optuna" \
    || { echo "setup: the installation is incomplete (see the pip messages above)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

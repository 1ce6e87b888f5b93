#!/usr/bin/env bash
# Every GPU figure on a lent GPU machine (no network): run from the repository root with .whl/
# carried (see gpu_wheels.txt). Figures go to $OUT/gpu (results.json, tables.md, env.json, traces)
# and the log to $OUT/log.txt.
# Usage: bash platform/bench/gpu_device.sh [MINUTES, default 7] [more options of the suite, e.g. --only packed]
set -u
MINUTES="${1:-7}"
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    || for w in .whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done  # no pip: a wheel is a zip
  export PYTHONPATH=/tmp/site
fi
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 PYTORCH_NVML_BASED_CUDA_CHECK=1
python3 -m platform.bench gpu --minutes "$MINUTES" --out "$OUT/gpu" "${@:2}" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"

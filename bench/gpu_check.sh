#!/usr/bin/env bash
# One short GPU session: per-family img/s at 512^2 (bf16 + channels_last), then Ray Train trial vs raw loop
# and packed fractional-GPU trials, fixed cost per one-GPU trial (fresh vs re-used process). Meant for a
# machine with torch + CUDA; Ray/Optuna come from .carry/ when present
# (a tarball of them and wheels, unpacked below). Writes figures under ${OUT:-gpu_out}/.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if [ -f .carry/ray.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .carry/ray.tar.xz -C /tmp/site &&
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout "${FAMILIES_TIMEOUT:-170}" python3 bench/bench_families.py --device cuda 2>&1 | tee "$OUT/families.txt"
timeout "${SEARCH_TIMEOUT:-320}" python3 bench/gpu_search_check.py --json "$OUT/search.json" 2>&1 | tee "$OUT/search.txt"

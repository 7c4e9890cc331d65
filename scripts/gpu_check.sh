#!/usr/bin/env bash
# The GPU user's checks, in one run: every `cuda`-marked test (bench with CUDA events and
# synchronisation, audit on a CUDA model and sample, Monitor on a CUDA run with no per-step host
# sync, INT8 refused with its one-line reason), then the demo's CPU path as a smoke test.
# Run on a machine with a CUDA device, from the repository root:
#     scripts/gpu_check.sh            (creates .venv with the test extras if missing)
# Results go to ${OUT:-gpu_check}/: pytest's junit XML, its log and nvidia-smi's description of
# the card, to be summarised in docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || make install-test
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device visible to torch {torch.__version__} (built for CUDA {torch.version.cuda})")
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
# -m cuda selects the GPU tests; -p no:cacheprovider keeps the copied tree clean.
"$PY" -m pytest -m cuda -p no:cacheprovider -rA --junitxml="$OUT/cuda.xml" tests 2>&1 | tee "$OUT/cuda.log"

#!/usr/bin/env bash
# The GPU check: one table (full MRS on ResNet-18, TRADES throughput with AMP, with torch.compile and at batch 512,
# pruned latency, a DDP epoch under torchrun, the CUDA-marked tests).
# Usage: benchmarks/gpu_check.sh [--dry] [--parts mrs,trades,variants,latency,ddp,tests]
# Pure-python packages the machine lacks (torch-pruning, torchattacks, pytest, ...) install from wheels in .whl/
# into a temporary folder, without the network. With $OUT set, the table is also written to $OUT/gpu_check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${TMPDIR:-/tmp}/robust-prune-wheels
  if [ ! -d "$SITE" ]; then
    "$PY" -m pip install -q --no-deps --no-index --disable-pip-version-check --target "$SITE" .whl/*.whl
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"

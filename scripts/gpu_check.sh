#!/usr/bin/env bash
# The GPU check on a machine with one CUDA GPU: install the project, then run scripts/gpu_check.py
# (device tests, benchmarks, a short compiled nnU-Net run) and print its table last.
#
#   bash scripts/gpu_check.sh                    # from PyPI into .venv-gpu (reuses a system torch if there is one)
#   bash scripts/gpu_check.sh --wheels DIR       # offline: install from the wheels in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
find_links=()
if [[ "${1:-}" == "--wheels" ]]; then
  find_links=(--no-index --find-links "$2")
fi
if [[ ! -x .venv-gpu/bin/python ]]; then
  # --system-site-packages: an image's CUDA build of torch is used as it is, not downloaded again
  python3 -m venv --system-site-packages .venv-gpu
fi
.venv-gpu/bin/python -m pip install -q "${find_links[@]}" -e '.[test,bench]'
PYTHONUNBUFFERED=1 exec .venv-gpu/bin/python scripts/gpu_check.py

#!/usr/bin/env bash
# Install SpecDiffTree and its dependencies into ./.venv (idempotent; re-running updates it).
#   bash install.sh          # the package and everything the transformers backbones run with (no compiling)
#   bash install.sh --gguf   # plus llama.cpp for `gguf:` priors and `sdt export-gguf` (the [gguf] extra)
#   bash install.sh --dev    # every extra (gguf, ray) and the test tools (pytest, hypothesis)
# torch is pinned to 2.13.0 (a CPU build where a local wheel is offered; see README).
set -euo pipefail
cd "$(dirname "$0")"
extras=""
case "${1:-}" in
  --dev) extras="[dev]" ;;
  --gguf) extras="[gguf]" ;;
  "") ;;
  *) echo "usage: bash install.sh [--gguf | --dev]" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "installing specdifftree${extras} into .venv (torch==2.13.0 pinned) ..."
# With --gguf or --dev, llama-cpp-python compiles from source on first install (~9 min on 2 cores;
# pip caches the wheel). GGML_NATIVE=OFF makes that build portable across CPUs.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
# pip prints a warning per package for index locations that do not apply here: keep the log readable
.venv/bin/python -m pip install --disable-pip-version-check -q "torch==2.13.0" -e ".${extras}" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
.venv/bin/sdt --version

#!/usr/bin/env bash
# Set up vitq on a fresh machine: Fashion-MNIST (Debian package), a virtual environment in .venv with the pinned
# PyTorch build, and vitq itself (editable) with its test and plot extras. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Fashion-MNIST (dataset-fashion-mnist)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST not found; run 'apt-get install dataset-fashion-mnist' as root for the default data"
  fi
fi

if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # only the browser test of 'vitq analyze' reports needs it; it is skipped without
  echo "setup: installing chromium (headless browser for the report rendering test)"
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "setup: installing torch 2.14.1 + torchvision 0.29.1 (a few minutes)"
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
fi
if ! .venv/bin/python -c "import vitq, pytest, hypothesis, matplotlib, onnx, onnxruntime" 2>/dev/null; then
  echo "setup: installing vitq and its dependencies"
  .venv/bin/pip install -q -e ".[test,plot]"
fi
echo "setup: done (.venv/bin/vitq --help)"

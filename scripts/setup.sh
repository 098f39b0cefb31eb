#!/usr/bin/env bash
# Set up a fresh machine for squeezelab: Debian data set, a virtual environment, the package.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST for the benchmarks and the Fashion-MNIST test (Debian package, offline afterwards).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null
  else
    echo "note: install the Debian package dataset-fashion-mnist for the benchmarks (needs root)" >&2
  fi
fi

# Chromium for the browser tests (JupyterLab and the offline report); Playwright drives this
# Debian build, so nothing is downloaded at test time.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: install the Debian package chromium for the browser tests (needs root)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# constraints.txt pins torch to the CPU wheel: an unpinned torch resolves to a multi-GB CUDA build.
.venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"

#!/usr/bin/env bash
# Set up kmunet in ./.venv on a fresh machine (idempotent): CPU build of PyTorch, then kmunet with its
# test extras. On a CUDA machine, install the torch build for your CUDA into the venv first; this
# script keeps whatever torch is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install -q --upgrade pip
    # TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) picks the build where pip's own
    # configuration does not already provide the CPU wheel (as it does on the CI machines).
    .venv/bin/pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
if ! .venv/bin/python -c "import kmunet, monai, pytest, sigpy, highdicom" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.kmunet-installed ]; then
    # Keep the torch already installed (a plain 'torch' requirement would pull a multi-GB CUDA build).
    torch_version=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])")
    .venv/bin/pip install -q -c <(echo "torch==${torch_version}") -e ".[test]"
    touch .venv/.kmunet-installed
fi

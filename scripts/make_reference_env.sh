#!/usr/bin/env bash
# Builds .venv-reference: Meta's official segment-anything, which the parity tests run in a
# subprocess to check that our SAM stage gives the same masks, IoU predictions and mask tokens.
# It needs torchvision, which does not load beside the CPU torch 2.13.0 build, hence its own venv.
#
#   bash scripts/make_reference_env.sh          # the parity tests' needs
#   bash scripts/make_reference_env.sh --bench  # also what bench/reference_pipeline.py needs
#                                               # (it puts this repo's RAM head beside Meta's AMG)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! { [ -x .venv-reference/bin/python ] && .venv-reference/bin/python -c "import segment_anything" 2>/dev/null; }; then
    python3 -m venv .venv-reference
    .venv-reference/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 segment-anything==1.0 numpy
    .venv-reference/bin/python -c "import segment_anything, torch; print('reference env: segment-anything with torch', torch.__version__)"
fi
if [ "${1:-}" = "--bench" ]; then
    .venv-reference/bin/pip install -q --disable-pip-version-check pycocotools safetensors transformers
fi

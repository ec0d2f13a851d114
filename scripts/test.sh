#!/usr/bin/env bash
# Install everything the tests need and run them (the README's test command; CI calls it too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system_deps.sh
# The CPU build of PyTorch first: an unpinned torch request would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[testing]"
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-xcb}"
xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest -q -p no:cacheprovider "$@"

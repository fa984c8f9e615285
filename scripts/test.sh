#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Official-reference fixtures for the parity tests (see tests/conftest.py).
export VOICEFLEET_COMPAT_DIR=${VOICEFLEET_COMPAT_DIR:-$(cd .. && pwd)/shared/compat}
exec .venv/bin/python -m pytest "$@"

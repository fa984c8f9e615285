#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Test data that lives beside the repository, never inside it (see tests/conftest.py):
# official-reference fixtures, the official text front end's dictionaries, and NLTK data.
SHARED=$(cd .. && pwd)/shared
export VOICEFLEET_COMPAT_DIR=${VOICEFLEET_COMPAT_DIR:-$SHARED/compat}
if [ -d "$SHARED/gptsovits_text" ]; then export VOICEFLEET_TEXT_DATA=${VOICEFLEET_TEXT_DATA:-$SHARED/gptsovits_text}; fi
if [ -d "$SHARED/nltk_data" ]; then export NLTK_DATA=${NLTK_DATA:-$SHARED/nltk_data}; fi
exec .venv/bin/python -m pytest "$@"

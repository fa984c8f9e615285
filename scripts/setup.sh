#!/usr/bin/env bash
# Sets up .venv with voicefleet and its dependencies: bash scripts/setup.sh
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${VOICEFLEET_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    echo "voicefleet setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip >/dev/null

# Install torch on its own first so that no dependency resolves an unpinned torch to a
# CUDA build with gigabytes of extra packages. VOICEFLEET_TORCH overrides the spec
# (e.g. on GPU nodes: VOICEFLEET_TORCH="torch==2.13.0 --index-url <your CUDA index>").
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "voicefleet setup: installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    $PIP install $TORCH_SPEC
fi

# The page's browser tests (tests/serve/test_page_browser.py) drive Debian's Chromium through
# Playwright; Playwright's own browser download is never used.
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
        echo "voicefleet setup: installing chromium (apt) for the browser tests"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    else
        echo "voicefleet setup: chromium is missing (apt-get install chromium); the browser tests will skip"
    fi
fi

# Japanese: pyopenjtalk has no wheel and builds from source (C/C++ compiler and cmake), and its
# Open JTalk dictionary comes from Debian's open-jtalk-mecab-naist-jdic (pyopenjtalk's own
# download is never used; voicefleet.text.japanese finds the Debian folder by itself).
APT_PACKAGES=""
[ -f /var/lib/mecab/dic/open-jtalk/naist-jdic/sys.dic ] || APT_PACKAGES="$APT_PACKAGES open-jtalk-mecab-naist-jdic"
if ! .venv/bin/python -c "import pyopenjtalk" 2>/dev/null; then
    command -v cmake >/dev/null 2>&1 || APT_PACKAGES="$APT_PACKAGES cmake"
    command -v g++ >/dev/null 2>&1 || APT_PACKAGES="$APT_PACKAGES g++"
fi
if [ -n "$APT_PACKAGES" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
        echo "voicefleet setup: installing$APT_PACKAGES (apt) for the Japanese front end"
        # shellcheck disable=SC2086
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
    else
        echo "voicefleet setup: missing$APT_PACKAGES; install them (Debian/Ubuntu package names) for Japanese," \
             "or set OPEN_JTALK_DICT_DIR to an Open JTalk dictionary folder"
    fi
fi

echo "voicefleet setup: installing voicefleet and its dependencies (with the evaluation instruments)"
$PIP install -e ".[dev,eval,onnx]"
echo "voicefleet setup: done ($(.venv/bin/python -c 'import torch, ray; print("torch", torch.__version__, "/ ray", ray.__version__)'))"

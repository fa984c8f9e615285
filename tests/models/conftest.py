"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def v2pro_dir(compat_dir):
    """`$VOICEFLEET_COMPAT_DIR/v2pro`, the v2Pro/v2ProPlus fixtures of the official code."""
    path = compat_dir / "v2pro"
    if not path.is_dir():
        pytest.skip(f"v2Pro compat fixtures not found at {path}")
    return path

"""Choosing between the native decoding kernels and the eager torch path inside a test."""

from __future__ import annotations

import pytest

from voicefleet.inference import native


def forget_kernels() -> None:
    """Drop the loaded native library, so the next use reads the environment again."""
    native.native_library.cache_clear()
    native.int8_rows_kernel.cache_clear()


def select_kernels(use_native: bool, monkeypatch) -> None:
    """Native kernels (skipping the test where they cannot load) or the eager path (switched off
    through `VOICEFLEET_NATIVE`); call `forget_kernels()` when the test is done with them."""
    if use_native and native.native_library() is None:
        pytest.skip("native kernels unavailable here")
    if not use_native:
        monkeypatch.setenv("VOICEFLEET_NATIVE", "0")
        forget_kernels()

"""The one error type raised for unreadable or mismatched checkpoint files."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of the wrong kind or version, or has wrong keys/shapes.

    The message always names the file, and the key and the expected value where one is at fault.
    """

    def __init__(self, path: str | Path | None, message: str, *, key: str | None = None):
        self.path = None if path is None else Path(path)
        self.key = key
        where = f"{self.path}: " if self.path is not None else ""
        what = f"key {key!r}: " if key is not None else ""
        super().__init__(f"{where}{what}{message}")

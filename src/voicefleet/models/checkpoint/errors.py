"""The one error type raised for unreadable or mismatched checkpoint files."""

from __future__ import annotations

import functools
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of the wrong kind or version, or has wrong keys/shapes.

    The message always names the file, and the key and the expected value where one is at fault.
    """

    def __init__(self, path: str | Path | None, message: str, *, key: str | None = None):
        self.path = None if path is None else Path(path)
        self.key = key
        self.message = message  # without the file and key, which str() adds
        where = f"{self.path}: " if self.path is not None else ""
        what = f"key {key!r}: " if key is not None else ""
        super().__init__(f"{where}{what}{message}")

    def __reduce__(self):
        # Exceptions unpickle as `cls(*self.args)`, and `args` holds only the formatted message;
        # rebuild from the constructor's own arguments instead. Ray pickles a worker's exception to
        # re-raise it in the driver, so this must round-trip.
        return functools.partial(type(self), key=self.key), (self.path, self.message), self.__dict__

"""The `voicefleet` command line (`voicefleet.cli.app`); `main` is the console script."""

from voicefleet.cli.app import app, main

__all__ = ["app", "main"]

"""Shared helpers of the command-line layer: one-line user errors and exit codes."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """An error caused by what the user gave; printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from voicefleet.models.checkpoint import CheckpointError
    from voicefleet.models.config import ConfigError
    from voicefleet.inference.pipeline import SynthesisError
    from voicefleet.models.pretrained import PretrainedError
    from voicefleet.text.frontend import TextFrontendError
    from voicefleet.platform.registry import RegistryError
    from voicefleet.platform.training.api import TrainingError
    from voicefleet.tuning.sweep import SweepError

    return (UserError, CheckpointError, ConfigError, PretrainedError, SynthesisError, TextFrontendError,
            RegistryError, TrainingError, SweepError, FileExistsError, FileNotFoundError,
            ValueError)


def _one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors())
    return " ".join(str(e).split())


def user_facing(fn: F) -> F:
    """Turn the errors a user can fix into one red line and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            # escaped: a message may hold brackets (pip extras, paths) that rich would take for markup
            console.print(f"[red]error:[/red] {escape(_one_line(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]

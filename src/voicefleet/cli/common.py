"""Shared helpers of the command-line layer: one-line user errors and exit codes, and options whose
default, bounds and help come from the config field they set."""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """An error caused by what the user gave; printed as one line, exit code 2."""


_USER_ERROR_CLASSES = (
    ("voicefleet.models.checkpoint", "CheckpointError"), ("voicefleet.models.config", "ConfigError"),
    ("voicefleet.models.pretrained", "PretrainedError"), ("voicefleet.inference.params", "SynthesisError"),
    ("voicefleet.text.frontend", "TextFrontendError"), ("voicefleet.platform.registry", "RegistryError"),
    ("voicefleet.platform.training.api", "TrainingError"), ("voicefleet.tuning.sweep", "SweepError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    import importlib

    found: list[type[BaseException]] = [UserError]
    for module, name in _USER_ERROR_CLASSES:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            # a module that cannot be imported here (e.g. torch absent with --engine onnx) raised nothing
            continue
    return (*found, FileExistsError, FileNotFoundError, ValueError)


def _one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}{_got(err)}" for err in e.errors())
    return " ".join(str(e).split())


def _got(err: dict) -> str:
    value = err.get("input")
    return f" (got {value!r})" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


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


_FIELD = object()  # "take the default from the field"
_BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def field_option(model: type[BaseModel], name: str, *param_decls: str, default: Any = _FIELD,
                 help: str | None = None, **kwargs: Any) -> Any:
    """A `typer.Option` for `model.<name>`: its default, bounds, choices and help are the field's.

    Inclusive bounds become the option's min/max (checked as the flags are parsed); choices and
    open bounds are stated in the help and checked by the model the command builds, which reports
    a bad value as one line (`user_facing`).

    `default=None` makes an option that is unset unless given (a config file or the model then
    decides); its help still states the field's default. Another `default` replaces the field's
    (e.g. one per stage). `help` replaces the field's description.
    """
    return info_option(model.model_fields[name], *param_decls, default=default, help=help, **kwargs)


def annotated_option(annotated: Any, default: Any, *param_decls: str, help: str | None = None,
                     **kwargs: Any) -> Any:
    """A `typer.Option` for a shared `Annotated[type, Field(...)]` type and its default."""
    return info_option(FieldInfo.from_annotated_attribute(annotated, default), *param_decls, help=help, **kwargs)


def info_option(field: FieldInfo, *param_decls: str, default: Any = _FIELD, help: str | None = None,
                **kwargs: Any) -> Any:
    """A `typer.Option` from a pydantic field (see `field_option`)."""
    field_default = ... if field.default is PydanticUndefined else field.default
    text = help or field.description or ""
    if default is _FIELD:
        default = field_default
    elif default is None and field_default not in (None, ...):
        text = f"{text} (default {_shown(field_default)})"
    kind = _unwrap_optional(field.annotation)
    bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower())
              for m in field.metadata if isinstance(m, _BOUNDS)}
    if get_origin(kind) is Literal:
        text = f"{text} [{'|'.join(map(str, get_args(kind)))}]"
    elif "gt" in bounds or "lt" in bounds:
        b = {k: _shown(v) for k, v in bounds.items()}
        low = f"{b['gt']}<" if "gt" in b else f"{b['ge']}<=" if "ge" in b else ""
        high = f"<{b['lt']}" if "lt" in b else f"<={b['le']}" if "le" in b else ""
        text = f"{text} [{low}x{high}]"
    else:
        kwargs.setdefault("min", bounds.get("ge"))
        kwargs.setdefault("max", bounds.get("le"))
    return typer.Option(default, *param_decls, help=text.strip(), **kwargs)


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)

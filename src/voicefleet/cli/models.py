"""`voicefleet init-pretrained` and `voicefleet inspect`: pretrained folders and weight files.

    voicefleet init-pretrained --tiny pretrained/tiny
    voicefleet init-pretrained --tiny --version v2ProPlus pretrained/tiny-v2proplus
    voicefleet inspect pretrained_models/gsv-v2final-pretrained/s2G2333k.pth
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import UserError, user_facing


@user_facing
def init_pretrained_cmd(
    folder: Path = typer.Argument(..., help="Where to write the pretrained folder."),
    tiny: bool = typer.Option(False, "--tiny", help="Tiny models for tests and demos (a few MB)."),
    full: bool = typer.Option(False, "--full", help="Official sizes, random weights (for benchmarks)."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
    version: str = typer.Option("v2", "--version", help="Model version: v2, v2Pro or v2ProPlus."),
) -> None:
    """Write a random-initialised pretrained folder in the official GPT-SoVITS layout."""
    from voicefleet.models.config import SOVITS_VERSIONS
    from voicefleet.models.pretrained import init_pretrained

    if tiny == full:
        raise UserError("choose exactly one of --tiny or --full")
    if version not in SOVITS_VERSIONS:
        raise UserError(f"--version must be one of {', '.join(SOVITS_VERSIONS)}, got {version!r}")
    paths = init_pretrained(folder, "tiny" if tiny else "full", seed=seed, overwrite=overwrite, version=version)
    table = Table(title=f"{version} pretrained folder ({'tiny' if tiny else 'full'}, random weights)")
    table.add_column("part")
    table.add_column("path")
    for part in ("hubert", "bert", "gpt", "sovits_g", "sovits_d", "sv"):
        if getattr(paths, part) is not None:
            table.add_row(part, str(getattr(paths, part)))
    Console().print(table)


@user_facing
def inspect_cmd(path: Path = typer.Argument(..., help="An official .pth / .ckpt weight file.")) -> None:
    """Say what kind of GPT-SoVITS weight file PATH is and check that it loads."""
    from voicefleet.models.inspect import inspect_checkpoint

    report = inspect_checkpoint(path)
    table = Table(title=str(path), show_header=False)
    for key, value in report.items():
        table.add_row(key, str(value))
    Console().print(table)

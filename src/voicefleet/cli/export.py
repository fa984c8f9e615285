"""`voicefleet export`: a registered voice as files for GPT-SoVITS's own weights folders.

    voicefleet export alice --storage runs --to ~/GPT-SoVITS
    voicefleet export bob --storage runs --to ~/GPT-SoVITS --pretrained pretrained_models   (an adapter voice)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import user_facing


@user_facing
def export_cmd(
    voice: str = typer.Argument(..., help="Registered voice id."),
    to: Path = typer.Option(..., "--to", help="A GPT-SoVITS checkout (or any folder): files go into its "
                                              "SoVITS_weights_<model>/ and GPT_weights_<model>/ (v2, v2Pro, ..)."),
    storage: str = typer.Option("runs", help="Storage path; the voice is read from <storage>/registry."),
    version: Optional[int] = typer.Option(None, "--version", help="The voice's version (default: its current one, "
                                                                  "the only one the registry keeps)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files of the same name."),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Adapter voices: the pretrained folder their "
                                              "adapters were trained on (default: the one the voice's record names); "
                                              "the adapters are merged into its weights."),
) -> None:
    """Write VOICE as <voice>_v<version>.pth / .ckpt in GPT-SoVITS's weights folders of its model version."""
    from voicefleet.platform.voices import export_voice

    exported = export_voice(voice, storage, to, version=version, overwrite=overwrite, pretrained=pretrained)
    table = Table(title=f"voice {exported.voice_id} (version {exported.version})", show_header=False)
    table.add_row("SoVITS", str(exported.sovits))
    table.add_row("GPT", str(exported.gpt))
    Console().print(table)
    if not exported.official_size:
        Console(stderr=True).print("[yellow]warning:[/yellow] this voice is not of official size: voicefleet loads "
                                   "it, GPT-SoVITS's WebUI and api_v2.py cannot", highlight=False)

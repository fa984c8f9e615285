"""`voicefleet export`: a registered voice as files for GPT-SoVITS's own weights folders, or as ONNX
graphs for the onnxruntime engine.

    voicefleet export alice --storage runs --to ~/GPT-SoVITS
    voicefleet export bob --storage runs --to ~/GPT-SoVITS --pretrained pretrained_models   (an adapter voice)
    voicefleet export onnx alice --storage runs --pretrained pretrained_models [--int8]   (into the registry)
    voicefleet export onnx alice --storage runs --pretrained pretrained_models -o alice-onnx
    voicefleet export onnx --gpt voice.ckpt --sovits voice.pth --pretrained pretrained_models -o voice-onnx
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from voicefleet.cli.common import UserError, user_facing


class _ExportGroup(TyperGroup):
    """`voicefleet export VOICE --to DIR` stays the official-folders export (the `official`
    sub-command); `voicefleet export onnx ...` is the ONNX one."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["official", *args]
        return super().parse_args(ctx, args)


export_app = typer.Typer(cls=_ExportGroup, no_args_is_help=True,
                         help="Export a voice: into GPT-SoVITS's weights folders (`export VOICE --to DIR`) or "
                              "as ONNX graphs (`export onnx`).")


@export_app.command("official")
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


@export_app.command("onnx")
@user_facing
def export_onnx_cmd(
    voice: Optional[str] = typer.Argument(None, help="Registered voice id (or give --gpt and --sovits)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (graphs, tokenizer.json, "
                                       "manifest.json); default for a registered voice: into the registry beside "
                                       "its files, where `serve --engine onnx` reads it."),
    pretrained: Path = typer.Option(..., "--pretrained", help="Official pretrained folder (HuBERT and BERT; the "
                                                              "GPT and SoVITS too unless a voice is given)."),
    gpt: Optional[Path] = typer.Option(None, "--gpt", help="GPT .ckpt instead of a registered voice."),
    sovits: Optional[Path] = typer.Option(None, "--sovits", help="SoVITS .pth instead of a registered voice."),
    storage: str = typer.Option("runs", help="Storage path; a voice id is read from <storage>/registry."),
    int8: bool = typer.Option(False, "--int8", help="Quantise the GPT and BERT graphs to int8 weights "
                                                    "(onnxruntime dynamic quantisation); SoVITS stays fp32."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder (or the voice's export "
                                                              "in the registry)."),
) -> None:
    """Write a voice and its pretrained HuBERT/BERT as ONNX graphs for `synthesize --engine onnx` and
    `serve --engine onnx`."""
    from voicefleet.inference.onnx_engine import GRAPHS
    from voicefleet.models.pretrained import find_pretrained

    if voice is not None and (gpt or sovits):
        raise UserError("give a registered voice or --gpt/--sovits, not both")
    if out is None and voice is None:
        raise UserError("-o/--out is needed with --gpt/--sovits (a registered voice's export goes into the registry "
                        "without it)")
    if out is not None and out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    paths = find_pretrained(pretrained)
    with Progress(TextColumn("exporting {task.fields[graph]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("export", total=len(GRAPHS), graph="")

        def progress(name: str) -> None:
            done = GRAPHS.index(name)
            bar.update(task, completed=done, graph=name)

        if voice is not None:
            from voicefleet.platform.voices import export_voice_onnx

            exported = export_voice_onnx(voice, storage, paths, out, int8=int8, overwrite=overwrite, progress=progress)
        else:
            from voicefleet.inference.onnx_export import export_onnx

            exported = export_onnx(gpt or paths.gpt, sovits or paths.sovits_g, paths, out, int8=int8,
                                   overwrite=overwrite, progress=progress)
        bar.update(task, completed=len(GRAPHS))
    table = Table(title=f"{exported.folder} ({exported.manifest['precision']})")
    table.add_column("graph")
    table.add_column("MB", justify="right")
    for name, entry in exported.manifest["graphs"].items():
        table.add_row(name, f"{entry['bytes'] / 1e6:.1f}")
    Console().print(table)

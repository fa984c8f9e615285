"""`voicefleet eval`: how good a voice is (speaker similarity, DNSMOS, WER, speed), as a report.

    voicefleet eval val.list --out out/eval --voice alice --storage runs --pretrained pretrained_models
    voicefleet eval slices.list --out out/consistency --against ref.wav --metrics similarity,dnsmos
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from voicefleet.cli.common import console, user_facing

SHOWN = (("n", "utterances"), ("speaker_similarity", "speaker similarity"),
         ("speaker_similarity_to_ref", "similarity to the reference clip"), ("dnsmos_sig", "DNSMOS signal"),
         ("dnsmos_bak", "DNSMOS background"), ("dnsmos_ovrl", "DNSMOS overall"), ("wer", "WER"),
         ("rtf", "real-time factor"), ("duration_ratio", "duration ratio"))


@user_facing
def eval_cmd(
    list_file: Path = typer.Argument(..., help="List file (audio|speaker|lang|text): real clips and their text."),
    out: Path = typer.Option(..., "--out", help="Report folder: eval.json, utterances.csv, audio/, report.md."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Any of similarity,dnsmos,wer (default: all)."),
    voice: Optional[str] = typer.Option(None, "--voice", help="Voice mode: a registry voice id."),
    storage: str = typer.Option("runs", help="Storage path of --voice's registry (<storage>/registry)."),
    gpt: Optional[Path] = typer.Option(None, "--gpt", help="Voice mode from files: GPT .ckpt (default: pretrained)."),
    sovits: Optional[Path] = typer.Option(None, "--sovits", help="Voice mode from files: SoVITS .pth "
                                          "(default: pretrained)."),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Pretrained folder (HuBERT, BERT); "
                                              "needed in voice mode."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference clip (3-10 s) instead of the voice's."),
    ref_text: Optional[str] = typer.Option(None, "--ref-text", help="Transcript of --ref."),
    ref_lang: Optional[str] = typer.Option(None, "--ref-lang", help="Language of --ref-text (zh, en)."),
    against: Optional[Path] = typer.Option(None, "--against", help="Audio mode: score the list's own clips "
                                           "against this clip."),
    resynth: bool = typer.Option(False, "--resynth", help="Voice mode: SoVITS rebuilds each real clip from its "
                                 "own semantic tokens (judges the acoustic model alone)."),
    asr_model: Optional[Path] = typer.Option(None, "--asr-model", help="PocketSphinx model folder replacing the "
                                             "built-in English recogniser (for WER in another language)."),
    seed: int = typer.Option(0, help="Synthesis seed."),
    precision: str = typer.Option("fp32", help="fp32 or fast (see voicefleet synthesize)."),
    max_lines: Optional[int] = typer.Option(None, "--max-lines", min=1, help="Score an even subset of N lines."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Score a voice (or a list's own audio) line by line and write a report."""
    from voicefleet.platform.evaluation import VoiceSource, evaluate_list

    source = None
    if voice is not None or gpt is not None or sovits is not None or (ref is not None and against is None):
        source = VoiceSource(voice_id=voice, storage=storage, gpt=gpt, sovits=sovits, ref=ref, ref_text=ref_text,
                             ref_lang=ref_lang)
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("scoring", total=None)
        result = evaluate_list(list_file, out, voice=source, pretrained=pretrained, against=against,
                               metrics=metrics, resynth=resynth, asr_model=asr_model, seed=seed,
                               precision=precision, max_lines=max_lines, overwrite=overwrite,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    summary = result.summary
    table = Table(title=f"evaluation ({summary['mode']} mode)")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    for key, label in SHOWN:
        value = summary.get(key)
        if value is not None:
            table.add_row(label, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if summary.get("wer_note"):
        console.print(f"[yellow]note:[/yellow] {escape(summary['wer_note'])}", highlight=False, soft_wrap=True)
    console.print(f"report: {escape(str(out / 'report.md'))}", highlight=False)

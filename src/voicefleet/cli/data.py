"""`voicefleet prepare` and `voicefleet slice`: thin typer commands over `voicefleet.platform.data`.

    .venv/bin/voicefleet slice long_recording.wav --out data/alice --speaker alice --lang zh
    .venv/bin/voicefleet prepare data/alice/slices.list --pretrained pretrained_models --out datasets/alice

`voicefleet.cli.app` registers them as the `prepare` and `slice` commands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from voicefleet.cli.common import UserError, console, field_option, user_facing
from voicefleet.platform.data.config import PrepareConfig, StageResources
from voicefleet.platform.data.quality import MAX_DURATION_S, MIN_DURATION_S
from voicefleet.platform.data.slicer import SliceSettings

_SLICE = SliceSettings()


def _load_settings(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError: either way the file is unusable
        raise UserError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of PrepareConfig settings")
    return data


def _config(settings: dict, overrides: dict, resources: dict):
    from pydantic import ValidationError

    try:
        config = PrepareConfig.model_validate({**settings, **{k: v for k, v in overrides.items() if v is not None}})
        return config.with_resources(**resources)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in e.errors())
        raise UserError(f"invalid settings: {problems}") from None


def _quiet_ray_logs() -> None:
    # Ray Data logs each execution plan and a note that its own progress bars are off (ours is on).
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _summary_tables(result) -> list[Table]:
    manifest = result.manifest
    outcome = Table(title=f"dataset {result.dataset_version}" + (" (unchanged)" if result.no_op else ""))
    outcome.add_column("clips")
    outcome.add_column("count", justify="right")
    outcome.add_row("[green]kept[/green]", str(result.kept))
    for reason, count in sorted(result.rejects_by_reason.items()):
        outcome.add_row(f"[red]rejected: {reason}[/red]", str(count))
    outcome.add_row("processed this run", str(result.processed))
    outcome.add_row("reused", str(result.reused))
    speakers = Table(title="kept audio per speaker")
    for column in ("speaker", "clips", "train", "val"):
        speakers.add_column(column, justify="left" if column == "speaker" else "right")
    speakers.add_column("minutes", justify="right")
    for name, s in sorted(result.speakers.items()):
        speakers.add_row(name, str(s.clips), str(s.train), str(s.val), f"{s.seconds / 60:.2f}")
    speakers.add_row("[bold]total[/bold]", str(result.kept), str(manifest["counts"]["train"]),
                     str(manifest["counts"]["val"]), f"{manifest['durations']['kept_minutes']:.2f}")
    return [outcome, speakers]


@user_facing
def prepare_cmd(
    list_file: str = typer.Argument(..., help="GPT-SoVITS list file (wav_path|speaker|lang|text): a path or a URI."),
    pretrained: Path = typer.Option(..., "--pretrained", help="Official pretrained folder (HuBERT, BERT, SoVITS)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write (replaced when done)."),
    version: Optional[str] = typer.Option(None, "--version", help="Model version to prepare for when the "
                                          "pretrained folder holds several: v2, v2Pro or v2ProPlus (default: "
                                          "the first complete one of v2, v2ProPlus, v2Pro)."),
    audio_dir: Optional[str] = typer.Option(None, "--audio-dir", help="Find audio by file name in this folder "
                                            "(the official inp_wav_dir) instead of by the listed path."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON or YAML file of PrepareConfig settings."),
    workers: Optional[int] = field_option(StageResources, "concurrency", "--workers", default=None,
                                          help="Actors per model stage (text+BERT, HuBERT+tokens)."),
    cpus_per_worker: Optional[float] = field_option(StageResources, "num_cpus", "--cpus-per-worker", default=None,
                                                    help="Logical CPUs per actor."),
    gpus_per_worker: Optional[float] = field_option(StageResources, "num_gpus", "--gpus-per-worker", default=None,
                                                    help="GPUs per actor (fractions share a GPU)."),
    val_fraction: Optional[float] = field_option(PrepareConfig, "val_fraction", "--val-fraction", default=None,
                                                 help="Share of each speaker's clips for validation."),
    max_spectral_entropy: Optional[float] = field_option(PrepareConfig, "max_spectral_entropy",
                                                         "--max-spectral-entropy", default=None),
    audio_dtype: Optional[str] = field_option(PrepareConfig, "audio_dtype", "--audio-dtype", default=None),
    g2pw_model: Optional[Path] = field_option(PrepareConfig, "g2pw_model", "--g2pw-model", default=None),
    export_official: Optional[Path] = typer.Option(None, "--export-official",
                                                   help="Also write the official GPT-SoVITS experiment layout here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Prepare a training dataset (Parquet) from a GPT-SoVITS list file, on Ray Data."""
    from voicefleet.platform.data import prepare_dataset

    config = _config(_load_settings(config_file),
                     {"val_fraction": val_fraction, "max_spectral_entropy": max_spectral_entropy,
                      "audio_dtype": audio_dtype, "g2pw_model": g2pw_model},
                     {"workers": workers, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker})
    _quiet_ray_logs()
    with Progress(TextColumn("preparing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("clips", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = prepare_dataset(list_file, pretrained, out, config=config, audio_dir=audio_dir,
                                 export_official=export_official, progress=progress, version=version)
    stdout = Console()
    for table in _summary_tables(result):
        stdout.print(table)
    state = "already up to date" if result.no_op else "written"
    console.print(f"dataset {result.dataset_version} {state}: {result.out_dir}")
    if result.export_dir is not None:
        console.print(f"official layout: {result.export_dir}")


@user_facing
def slice_cmd(
    inputs: List[Path] = typer.Argument(..., help="Long recordings to cut (any format libsndfile reads)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the clips and slices.list (must be new or empty)."),
    method: str = typer.Option("vad", "--method", help="vad (silero-vad; energy if unavailable) or energy."),
    speaker: Optional[str] = typer.Option(None, "--speaker", help="Speaker name in the list (default: file name)."),
    lang: str = typer.Option("zh", "--lang", help="Language code for the list lines: zh, en, ja, ko or yue (or all_zh, all_ja, all_ko, all_yue)."),
    # SliceSettings checks MIN_DURATION_S <= min_s < max_s <= MAX_DURATION_S (the official clip limits)
    min_s: float = typer.Option(_SLICE.min_s, "--min-s", min=MIN_DURATION_S, max=MAX_DURATION_S,
                                help="Shortest clip in seconds."),
    max_s: float = typer.Option(_SLICE.max_s, "--max-s", min=MIN_DURATION_S, max=MAX_DURATION_S,
                                help="Longest clip in seconds."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
) -> None:
    """Cut long recordings into clips (--min-s to --max-s seconds) at pauses and write a list-file skeleton."""
    from voicefleet.platform.data.slicer import slice_recordings

    if method not in ("vad", "energy"):
        raise UserError(f"--method must be vad or energy, got {method!r}")
    if min_s >= max_s:
        raise UserError(f"--min-s ({min_s}) must be below --max-s ({max_s})")
    result = slice_recordings(inputs, out, method=method, speaker=speaker, lang=lang,  # type: ignore[arg-type]
                              settings=SliceSettings(min_s=min_s, max_s=max_s), overwrite=overwrite)
    table = Table(title=f"clips ({result.method})")
    for column in ("recording", "clips", "minutes", "left out (s)"):
        table.add_column(column, justify="left" if column == "recording" else "right")
    for src in inputs:
        mine = [c for c in result.clips if c.source == src]
        lost = sum(e - s for d, s, e in result.dropped if d == src)
        table.add_row(str(src), str(len(mine)), f"{sum(c.duration_s for c in mine) / 60:.2f}", f"{lost:.1f}")
    Console().print(table)
    console.print(f"wrote {len(result.clips)} clips and {result.list_path} (fill in the text after the last '|')")

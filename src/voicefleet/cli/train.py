"""`voicefleet train sovits|gpt`: thin typer commands over `training.api.train_stage`.

    voicefleet train sovits DATASET --pretrained DIR --run-name alice-s2 --workers 2 --voice alice
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import user_facing

train_app = typer.Typer(no_args_is_help=True, help="Fine-tune a voice on Ray Train (SoVITS and GPT stages).")


def _run(stage: str, dataset: Path, pretrained: Path, run_name: str, storage: str, workers: int, gpu: bool,
         placement: str, batch_size: int, epochs: int, max_steps: Optional[int], lr: float, gpt_lr_ratio: float,
         schedule: str, warmup: float, precision: str, eval_every: int, checkpoint_every: int,
         max_failures: int, voice: Optional[str], address: Optional[str]) -> None:
    from voicefleet.platform.cluster import ensure_ray
    from voicefleet.platform.training.api import train_stage
    from voicefleet.platform.training.config import TrainConfig
    from voicefleet.platform.training.schedules import ScheduleConfig
    from voicefleet.platform.voices import register_trained_voice

    config = TrainConfig(
        stage=stage, run_name=run_name, storage_path=storage, num_workers=workers, use_gpu=gpu,
        placement_strategy=placement, batch_size=batch_size, epochs=epochs, max_steps=max_steps, sovits_lr=lr,
        gpt_lr_ratio=gpt_lr_ratio, schedule=ScheduleConfig(kind=schedule, warmup_fraction=warmup), precision=precision,
        eval_every=eval_every, checkpoint_every=checkpoint_every, max_failures=max_failures)
    ensure_ray(address)
    result = train_stage(config, dataset, pretrained)
    out = Console()
    table = Table(title=f"run {result.run_name} ({stage})", show_header=False)
    table.add_row("steps", str(result.steps))
    table.add_row("best val_recon", f"{result.best_val_recon:.4f} (step {result.best_step})")
    table.add_row("stopped early", "yes" if result.stopped_early else "no")
    table.add_row("resumed at steps", ", ".join(map(str, result.resumed_at_steps)) or "-")
    table.add_row("exported", result.exported)
    table.add_row("outputs", result.output_dir)
    out.print(table)
    for line in result.verdicts:
        out.print(f"  verdict {line}")
    if voice:
        record = register_trained_voice(voice, storage, dataset, pretrained, lineage={f"{stage}_run": run_name},
                                        metrics={f"{stage}_val_recon": result.best_val_recon},
                                        **{stage: result.exported})
        out.print(f"registered voice [bold]{record.voice_id}[/bold] (version {record.version}) in {storage}/registry")


def _stage_command(stage: str):
    default_epochs = 8 if stage == "sovits" else 15

    @user_facing
    def command(
        dataset: Path = typer.Argument(..., help="Prepared dataset folder (voicefleet prepare)."),
        pretrained: Path = typer.Option(..., "--pretrained", help="Official pretrained folder."),
        run_name: str = typer.Option(..., "--run-name", help="Unique run name; the same name resumes the run."),
        storage: str = typer.Option("runs", help="Runs and registry: a folder or a URI (s3://, gs://, ...)."),
        workers: int = typer.Option(1, min=1, help="Ray Train workers (DDP ranks)."),
        gpu: bool = typer.Option(False, "--gpu", help="One GPU per worker (nccl); CPU workers use gloo."),
        placement: str = typer.Option("PACK", "--placement",
                                      help="Worker placement: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD "
                                           "(one worker per node)."),
        batch_size: int = typer.Option(4, min=1, help="Clips per worker per step."),
        epochs: int = typer.Option(default_epochs, min=1),
        max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after this many optimizer steps."),
        lr: float = typer.Option(1e-4, help="SoVITS base learning rate."),
        gpt_lr_ratio: float = typer.Option(0.4, help="GPT learning rate as a ratio of the SoVITS one."),
        schedule: str = typer.Option("warmup_cosine", help="warmup_cosine, or official (GPT-SoVITS's schedules)."),
        warmup: float = typer.Option(0.08, min=0.0, max=0.5, help="Warm-up as a fraction of all steps."),
        precision: str = typer.Option("auto", help="auto, fp32, bf16 or fp16 (mixed precision needs GPUs)."),
        eval_every: int = typer.Option(20, min=1, help="Steps between validation passes."),
        checkpoint_every: int = typer.Option(20, min=1, help="Steps between checkpoints (a multiple of eval)."),
        max_failures: int = typer.Option(2, min=-1, help="Restarts from the last checkpoint after a failure."),
        voice: Optional[str] = typer.Option(None, "--voice", help="Register the result as this voice id."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local)."),
    ) -> None:
        _run(stage, dataset, pretrained, run_name, storage, workers, gpu, placement, batch_size, epochs, max_steps,
             lr, gpt_lr_ratio, schedule, warmup, precision, eval_every, checkpoint_every, max_failures, voice, address)

    command.__doc__ = f"Fine-tune the {'SoVITS (acoustic)' if stage == 'sovits' else 'GPT (text-to-semantic)'} stage."
    return command


train_app.command("sovits")(_stage_command("sovits"))
train_app.command("gpt")(_stage_command("gpt"))

"""`voicefleet train sovits|gpt`: thin typer commands over `training.api.train_stage`.

    voicefleet train sovits DATASET --pretrained DIR --run-name alice-s2 --workers 2 --voice alice
    voicefleet train gpt DATASET --pretrained DIR --run-name alice-s1 --recipe official --seed 7
    voicefleet train sovits DATASET --pretrained DIR --run-name alice-s2 --eval-list val.list \
        --keep-best-by speaker_similarity --voice alice
    voicefleet train gpt DATASET --pretrained DIR --run-name bob-s1 --adapter lora --rank 8 --targets attn,ffn
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import UserError, field_option, user_facing
from voicefleet.models.adapter_config import parse_targets
from voicefleet.platform.training.config import STAGE_EPOCHS, TrainConfig
from voicefleet.platform.training.schedules import ScheduleConfig

train_app = typer.Typer(no_args_is_help=True, help="Fine-tune a voice on Ray Train (SoVITS and GPT stages).")


RETIRED_SCHEDULE = ("--schedule was retired: use --recipe official for GPT-SoVITS's optimizers and schedules "
                    "(--recipe voicefleet: warm-up + cosine restarts)")


def _run(stage: str, dataset: Path, pretrained: Path, run_name: str, storage: str, workers: int, gpu: bool,
         placement: str, batch_size: int, epochs: int, max_steps: Optional[int], recipe: str, lr: float,
         gpt_lr_ratio: float, warmup: float, precision: str, eval_every: int, checkpoint_every: int,
         max_failures: int, seed: int, voice: Optional[str], address: Optional[str], scoring: dict,
         adapter: str = "none", rank: int = TrainConfig.model_fields["lora_rank"].default,
         alpha: float = TrainConfig.model_fields["lora_alpha"].default, targets: Optional[str] = None) -> None:
    from voicefleet.platform.cluster import ensure_ray
    from voicefleet.platform.training.api import train_stage
    from voicefleet.platform.voices import register_trained_voice

    config = TrainConfig(
        stage=stage, run_name=run_name, storage_path=storage, num_workers=workers, use_gpu=gpu,
        placement_strategy=placement, batch_size=batch_size, epochs=epochs, max_steps=max_steps, recipe=recipe,
        sovits_lr=lr, gpt_lr_ratio=gpt_lr_ratio, schedule=ScheduleConfig(warmup_fraction=warmup),
        precision=precision, eval_every=eval_every, checkpoint_every=checkpoint_every, max_failures=max_failures,
        seed=seed, adapter=adapter, lora_rank=rank, lora_alpha=alpha, lora_targets=list(parse_targets(targets)) or None,
        **scoring)
    if address:  # join that cluster; without it the library starts the local Ray after its own checks
        ensure_ray(address)
    result = train_stage(config, dataset, pretrained)
    out = Console()
    table = Table(title=f"run {result.run_name} ({stage})", show_header=False)
    table.add_row("recipe", result.recipe)
    table.add_row("steps", str(result.steps))
    table.add_row("best val_recon", f"{result.best_val_recon:.4f} (step {result.best_step})")
    table.add_row("exported checkpoint", f"step {result.best_step}: {result.selection}")
    for score in result.scores:
        table.add_row(f"scores at step {score['step']}", ", ".join(
            f"{k} {score[k]:.3f}" for k in ("speaker_similarity", "dnsmos_ovrl", "wer") if score.get(k) is not None))
    table.add_row("stopped early", "yes" if result.stopped_early else "no")
    table.add_row("resumed at steps", ", ".join(map(str, result.resumed_at_steps)) or "-")
    table.add_row("exported", result.exported)
    table.add_row("outputs", result.output_dir)
    out.print(table)
    for line in result.verdicts:
        out.print(f"  verdict {line}")
    if voice:
        best = next((s for s in result.scores if s["step"] == result.best_step), {})
        scores = {f"{stage}_{k}": best[k] for k in ("speaker_similarity", "dnsmos_ovrl", "wer")
                  if best.get(k) is not None}
        record = register_trained_voice(voice, storage, dataset, pretrained,
                                        lineage={f"{stage}_run": run_name, f"{stage}_step": result.best_step,
                                                 f"{stage}_kept_by": f"{result.keep_best_by}: {result.selection}"},
                                        metrics={f"{stage}_val_recon": result.best_val_recon, **scores},
                                        **{stage: result.exported})
        out.print(f"registered voice [bold]{record.voice_id}[/bold] (version {record.version}) in {storage}/registry")


def _stage_command(stage: str):
    @user_facing
    def command(
        dataset: Path = typer.Argument(..., help="Prepared dataset folder (voicefleet prepare)."),
        pretrained: Path = typer.Option(..., "--pretrained", help="Official pretrained folder."),
        run_name: str = field_option(TrainConfig, "run_name", "--run-name"),
        storage: str = field_option(TrainConfig, "storage_path", "--storage"),
        workers: int = field_option(TrainConfig, "num_workers", "--workers"),
        gpu: bool = field_option(TrainConfig, "use_gpu", "--gpu"),
        placement: str = field_option(TrainConfig, "placement_strategy", "--placement"),
        batch_size: int = field_option(TrainConfig, "batch_size"),
        epochs: int = field_option(TrainConfig, "epochs", default=STAGE_EPOCHS[stage]),
        max_steps: Optional[int] = field_option(TrainConfig, "max_steps"),
        recipe: str = field_option(TrainConfig, "recipe"),
        lr: float = field_option(TrainConfig, "sovits_lr", "--lr"),
        gpt_lr_ratio: float = field_option(TrainConfig, "gpt_lr_ratio", help="voicefleet recipe: GPT learning "
                                           "rate = ratio x SoVITS base rate."),
        schedule: Optional[str] = typer.Option(None, "--schedule", hidden=True, help=RETIRED_SCHEDULE),
        warmup: float = field_option(ScheduleConfig, "warmup_fraction", "--warmup",
                                     help="voicefleet recipe: warm-up length as a fraction of all steps."),
        precision: str = field_option(TrainConfig, "precision"),
        eval_every: int = field_option(TrainConfig, "eval_every"),
        checkpoint_every: int = field_option(TrainConfig, "checkpoint_every"),
        max_failures: int = field_option(TrainConfig, "max_failures"),
        seed: int = field_option(TrainConfig, "seed"),
        eval_list: Optional[str] = field_option(TrainConfig, "eval_list", "--eval-list"),
        eval_lines: int = field_option(TrainConfig, "eval_lines"),
        eval_metrics: Optional[str] = field_option(TrainConfig, "eval_metrics"),
        score_every: Optional[int] = field_option(TrainConfig, "score_every"),
        eval_cpus: float = field_option(TrainConfig, "eval_cpus"),
        keep_best_by: str = field_option(TrainConfig, "keep_best_by"),
        adapter: str = field_option(TrainConfig, "adapter"),
        rank: int = field_option(TrainConfig, "lora_rank", "--rank"),
        alpha: float = field_option(TrainConfig, "lora_alpha", "--alpha"),
        targets: Optional[str] = field_option(TrainConfig, "lora_targets", "--targets"),
        voice: Optional[str] = typer.Option(None, "--voice", help="Register the result as this voice id."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local)."),
    ) -> None:
        if schedule is not None:
            raise UserError(RETIRED_SCHEDULE)
        _run(stage, dataset, pretrained, run_name, storage, workers, gpu, placement, batch_size, epochs, max_steps,
             recipe, lr, gpt_lr_ratio, warmup, precision, eval_every, checkpoint_every, max_failures, seed, voice,
             address, dict(eval_list=eval_list, eval_lines=eval_lines, eval_metrics=eval_metrics,
                           score_every=score_every, eval_cpus=eval_cpus, keep_best_by=keep_best_by),
             adapter, rank, alpha, targets)

    command.__doc__ = f"Fine-tune the {'SoVITS (acoustic)' if stage == 'sovits' else 'GPT (text-to-semantic)'} stage."
    return command


train_app.command("sovits")(_stage_command("sovits"))
train_app.command("gpt")(_stage_command("gpt"))

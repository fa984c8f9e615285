"""`voicefleet tune`: a thin typer command over `tuning.sweep.run_sweep`.

    voicefleet tune DATASET --pretrained DIR --voice alice --trials 8 --rounds 4 --steps-per-round 20
    voicefleet tune DATASET --pretrained DIR --voice alice --resume      # after an interruption
    voicefleet tune DATASET --pretrained DIR --voice alice --recipe official   # SoVITS rates only
    voicefleet tune DATASET --pretrained DIR --voice alice --metric speaker_similarity
    voicefleet tune DATASET --pretrained DIR --voice bob --adapter lora --ranks 4,8,16   # LoRA, rank searched
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import UserError, field_option, user_facing
from voicefleet.models.adapter_config import parse_targets
from voicefleet.tuning.config import SweepConfig
from voicefleet.tuning.space import Range, SearchSpace, parse_ranks

_SPACE = SearchSpace()


def _range(flag: str, text: str, log: bool) -> Range:
    try:
        low, high = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"{flag} takes LOW:HIGH (e.g. 0.2:1.0), got {text!r}") from None
    return Range(low=low, high=high, log=log)


def _space(path: Optional[Path], sovits_lr: Optional[str], ratio: Optional[str], warmup: Optional[str],
           min_warmup_steps: Optional[int], ranks: Optional[str] = None):
    """The YAML file's space (or the defaults), with any range given as a flag replacing its dimension."""
    space = SearchSpace.from_yaml(path) if path else SearchSpace()
    updates = {}
    if sovits_lr:
        updates["sovits_lr"] = _range("--sovits-lr", sovits_lr, log=_SPACE.sovits_lr.log)
    if ratio:
        updates["gpt_lr_ratio"] = _range("--gpt-lr-ratio", ratio, log=_SPACE.gpt_lr_ratio.log)
    if warmup:
        updates["warmup_fraction"] = _range("--warmup", warmup, log=_SPACE.warmup_fraction.log)
    if min_warmup_steps is not None:
        updates["min_warmup_steps"] = min_warmup_steps
    if ranks is not None:
        updates["lora_rank"] = parse_ranks(ranks)
    return SearchSpace(**{**space.model_dump(), **{k: v.model_dump() if hasattr(v, "model_dump") else v
                                                   for k, v in updates.items()}})


@user_facing
def tune_cmd(
    dataset: Path = typer.Argument(..., help="Prepared dataset folder (voicefleet prepare)."),
    pretrained: Path = typer.Option(..., "--pretrained", help="Official pretrained folder."),
    voice: str = field_option(SweepConfig, "voice", "--voice"),
    sweep_id: Optional[str] = field_option(SweepConfig, "sweep_id", "--sweep-id"),
    trials: int = field_option(SweepConfig, "trials"),
    concurrent: Optional[int] = field_option(SweepConfig, "max_concurrent", "--concurrent"),
    rounds: int = field_option(SweepConfig, "rounds"),
    steps_per_round: int = field_option(SweepConfig, "steps_per_round"),
    workers: int = field_option(SweepConfig, "num_workers", "--workers"),
    # one flag for SweepConfig's use_gpu and gpus_per_worker: 0 means CPU workers
    gpus_per_worker: float = typer.Option(0.0, min=0.0, help="GPUs per worker (0: CPU workers; 0.5 shares a GPU)."),
    batch_size: int = field_option(SweepConfig, "batch_size"),
    recipe: str = field_option(SweepConfig, "recipe"),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space YAML (default: built-in ranges)."),
    sovits_lr: Optional[str] = typer.Option(None, "--sovits-lr", help="SoVITS rate range LOW:HIGH, log-uniform "
                                            f"(default {_SPACE.sovits_lr.flag()})."),
    gpt_lr_ratio: Optional[str] = typer.Option(None, "--gpt-lr-ratio", help="GPT:SoVITS ratio range LOW:HIGH "
                                               f"(default {_SPACE.gpt_lr_ratio.flag()})."),
    warmup: Optional[str] = typer.Option(None, "--warmup", help="Warm-up fraction range LOW:HIGH "
                                         f"(default {_SPACE.warmup_fraction.flag()})."),
    min_warmup_steps: Optional[int] = field_option(SearchSpace, "min_warmup_steps", "--min-warmup-steps", default=None),
    metric: str = field_option(SweepConfig, "metric"),
    eval_metrics: Optional[str] = field_option(SweepConfig, "eval_metrics"),
    adapter: str = field_option(SweepConfig, "adapter"),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="With --adapter lora: LoRA ranks to search, "
                                        "comma-separated (e.g. 4,8,16), a categorical dimension of the space."),
    rank: Optional[int] = field_option(SweepConfig, "lora_rank", "--rank", default=None),
    alpha: Optional[float] = field_option(SweepConfig, "lora_alpha", "--alpha", default=None),
    alpha_rule: Optional[str] = field_option(SweepConfig, "alpha_rule", default=None),
    targets_gpt: Optional[str] = field_option(SweepConfig, "lora_targets_gpt", "--targets-gpt"),
    targets_sovits: Optional[str] = field_option(SweepConfig, "lora_targets_sovits", "--targets-sovits"),
    storage: str = field_option(SweepConfig, "storage_path", "--storage"),
    seed: int = field_option(SweepConfig, "seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted sweep of the same id."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local)."),
) -> None:
    """Search learning rates and warm-up (and LoRA ranks) with Ray Tune + Optuna; register the best voice."""
    from voicefleet.platform.cluster import ensure_ray
    from voicefleet.tuning.sweep import run_sweep

    if recipe == "official" and (gpt_lr_ratio or warmup):
        raise UserError("--gpt-lr-ratio and --warmup are dimensions of the voicefleet recipe; with --recipe official "
                        "the GPT runs at the official rates and the sweep searches the SoVITS rates only")
    lora_flags = {"--ranks": ranks, "--rank": rank, "--alpha": alpha, "--alpha-rule": alpha_rule,
                  "--targets-gpt": targets_gpt, "--targets-sovits": targets_sovits}
    given = [flag for flag, value in lora_flags.items() if value is not None]
    if adapter != "lora" and given:
        raise UserError(f"{given[0]} sets LoRA adapters: add --adapter lora (sweeps fine-tune every weight without it)")
    search = _space(space, sovits_lr, gpt_lr_ratio, warmup, min_warmup_steps, ranks)
    if search.lora_rank is not None and rank is not None:
        raise UserError(f"--rank {rank} fixes the LoRA rank and --ranks {search.lora_rank.flag()} searches it "
                        f"(from --ranks or the --space file): give one of them")
    adapter_fields = {name: value for name, value in (
        ("lora_rank", rank), ("lora_alpha", alpha), ("alpha_rule", alpha_rule),
        ("lora_targets_gpt", list(parse_targets(targets_gpt)) or None if targets_gpt else None),
        ("lora_targets_sovits", list(parse_targets(targets_sovits)) or None if targets_sovits else None))
        if value is not None}
    config = SweepConfig(
        voice=voice, sweep_id=sweep_id, storage_path=storage, trials=trials, max_concurrent=concurrent, rounds=rounds,
        steps_per_round=steps_per_round, num_workers=workers, use_gpu=gpus_per_worker > 0,
        gpus_per_worker=gpus_per_worker or 1.0, batch_size=batch_size, seed=seed, recipe=recipe, metric=metric,
        eval_metrics=eval_metrics, adapter=adapter, **adapter_fields,
        space=search)
    if address:  # join that cluster; without it the library starts the local Ray after its own checks
        ensure_ray(address)
    result = run_sweep(config, dataset, pretrained, resume=resume)
    out = Console()
    plan = config.adapter_plan()
    table = Table(title=f"sweep {result.sweep_id}" + (" (LoRA adapters)" if plan else ""))
    dims = list(config.space.dimensions())
    for col in ["trial", "status", *dims, *(["lora_rank"] if plan and "lora_rank" not in dims else []), "rounds",
                f"best {result.metric}", "error"]:
        table.add_column(col)
    for t in result.trials:
        best = t["best_objective"]
        style = "bold green" if t["trial_id"] == result.best_trial else None
        fixed = [str(plan.rank_of(t["params"]))] if plan and "lora_rank" not in dims else []
        table.add_row(t["trial_id"], t["status"], *[f"{t['params'].get(d, float('nan')):.4g}" for d in dims], *fixed,
                      str(t["rounds"]), "" if best is None else f"{best:.4f}", (t["error"] or "")[:60], style=style)
    out.print(table)
    if result.importances:
        out.print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()))
    out.print(f"best: trial {result.best_trial}, round {result.best_round}, {result.metric} "
              f"{result.best_objective:.4f}")
    out.print(f"registered {'adapter ' if plan else ''}voice [bold]{result.voice}[/bold] "
              f"(version {result.voice_version}); "
              f"report {result.report}")

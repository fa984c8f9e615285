"""`voicefleet run`: a thin typer command over `recipes.end_to_end.run_end_to_end`.

    voicefleet run clips/list.txt --voice alice --pretrained pretrained_models
    voicefleet run clips/list.txt --voice alice --no-tune --train-steps 400 --address auto
    voicefleet run clips/list.txt --voice bob --adapter lora --rank 8
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import field_option, user_facing
from voicefleet.models.adapter_config import parse_targets
from voicefleet.recipes.end_to_end import EndToEndConfig

E = EndToEndConfig


@user_facing
def run_cmd(
    list_file: str = typer.Argument(..., help=E.model_fields["list_file"].description),
    voice: str = field_option(E, "voice", "--voice"),
    pretrained: str = field_option(E, "pretrained", "--pretrained"),
    version: Optional[str] = field_option(E, "version", "--version"),
    workdir: str = field_option(E, "workdir", "--workdir"),
    storage: Optional[str] = field_option(E, "storage", "--storage"),
    tune: Optional[bool] = typer.Option(None, "--tune/--no-tune",
                                        help="Sweep learning rates, or train once (--no-tune) [default: tune; "
                                             "train once with --adapter lora]."),
    trials: int = field_option(E, "trials"),
    rounds: int = field_option(E, "rounds"),
    steps_per_round: int = field_option(E, "steps_per_round"),
    train_steps: int = field_option(E, "train_steps", help="--no-tune: optimizer steps of each stage."),
    recipe: str = field_option(E, "recipe"),
    workers: int = field_option(E, "workers"),
    gpus_per_worker: float = field_option(E, "gpus_per_worker"),
    batch_size: int = field_option(E, "batch_size"),
    serve: bool = field_option(E, "serve", "--serve/--no-serve"),
    host: str = field_option(E, "host"),
    port: int = field_option(E, "port"),
    say: Optional[str] = field_option(E, "say", "--say"),
    say_lang: str = field_option(E, "say_lang", "--say-lang"),
    output: Path = field_option(E, "output", "--output", "-o"),
    keep_serving: bool = typer.Option(True, "--keep-serving/--exit", help="Keep the endpoint up until Ctrl-C "
                                      "(--exit stops a local endpoint when done; a cluster's stays up)."),
    seed: int = field_option(E, "seed"),
    address: Optional[str] = field_option(E, "address", "--address"),
    adapter: str = field_option(E, "adapter"),
    rank: int = field_option(E, "lora_rank", "--rank"),
    alpha: float = field_option(E, "lora_alpha", "--alpha"),
    targets_gpt: Optional[str] = field_option(E, "lora_targets_gpt", "--targets-gpt"),
    targets_sovits: Optional[str] = field_option(E, "lora_targets_sovits", "--targets-sovits"),
) -> None:
    """Prepare, sweep (or train), register and serve a voice: one minute of speech to a live endpoint."""
    import time

    from voicefleet.recipes.end_to_end import run_end_to_end

    out = Console()
    config = EndToEndConfig(
        list_file=list_file, voice=voice, pretrained=pretrained, version=version, workdir=workdir, storage=storage,
        **({} if tune is None else {"mode": "tune" if tune else "train"}), trials=trials, rounds=rounds, steps_per_round=steps_per_round,
        train_steps=train_steps, recipe=recipe, workers=workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size, serve=serve,
        host=host, port=port, say=say, say_lang=say_lang, output=str(output), seed=seed, address=address,
        adapter=adapter, lora_rank=rank, lora_alpha=alpha, lora_targets_gpt=list(parse_targets(targets_gpt)) or None,
        lora_targets_sovits=list(parse_targets(targets_sovits)) or None)
    result = run_end_to_end(config, say=lambda line: out.print(f"[bold cyan]voicefleet run[/bold cyan] {line}"))
    table = Table(title=f"voice {result.voice}", show_header=False)
    table.add_row("dataset", f"{result.dataset} ({result.clips_kept} clips kept, {result.clips_rejected} rejected)")
    table.add_row("sweep report" if result.mode == "tune" else "training runs", result.outputs)
    if result.objective is not None:
        table.add_row("val_objective" if result.mode == "tune" else "SoVITS val_recon", f"{result.objective:.4f}")
    table.add_row("registry", f"{result.registry} (version {result.voice_version})")
    if result.endpoint:
        table.add_row("endpoint", f"{result.endpoint}  (POST /v1/tts, /v1/audio/speech; docs at /docs)")
    if result.wav:
        table.add_row("speech", result.wav)
    out.print(table)
    for step in result.steps:
        out.print(f"  - {step}")
    if result.endpoint and keep_serving:
        out.print(f"serving {result.voice} at {result.endpoint}; Ctrl-C to stop")
        while True:
            time.sleep(3600)

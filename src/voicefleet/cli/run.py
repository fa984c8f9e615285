"""`voicefleet run`: a thin typer command over `recipes.end_to_end.run_end_to_end`.

    voicefleet run clips/list.txt --voice alice --pretrained pretrained_models
    voicefleet run clips/list.txt --voice alice --no-tune --train-steps 400 --address auto
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from voicefleet.cli.common import user_facing


@user_facing
def run_cmd(
    list_file: str = typer.Argument(..., help="GPT-SoVITS list file (wav_path|speaker|lang|text)."),
    voice: str = typer.Option(..., "--voice", help="Voice id to register and serve."),
    pretrained: str = typer.Option("pretrained_models", "--pretrained", help="Official pretrained folder."),
    workdir: str = typer.Option("work", "--workdir", help="Datasets, runs and registry live here."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Runs/sweeps/registry (default <workdir>/runs); "
                                          "a URI (s3://, gs://) on clusters."),
    tune: bool = typer.Option(True, "--tune/--no-tune", help="Sweep learning rates (default), or train once."),
    trials: int = typer.Option(8, min=1, help="Sweep: configurations to try."),
    rounds: int = typer.Option(4, min=1, help="Sweep: evaluations per trial."),
    steps_per_round: int = typer.Option(20, min=1, help="Sweep: optimizer steps of each stage per round."),
    train_steps: int = typer.Option(200, min=1, help="--no-tune: optimizer steps of each stage."),
    workers: int = typer.Option(1, min=1, help="Ray Train workers per run or trial."),
    gpus_per_worker: float = typer.Option(0.0, min=0.0, help="GPUs per training worker (0: CPU)."),
    batch_size: int = typer.Option(4, min=1, help="Clips per worker per step."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the endpoint when the voice is ready."),
    host: str = typer.Option("127.0.0.1", help="HTTP host (0.0.0.0 to listen on every interface)."),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
    say: Optional[str] = typer.Option(None, "--say", help="Synthesise this sentence through the endpoint."),
    say_lang: str = typer.Option("zh", "--say-lang", help="Language of --say (zh, en, auto, ...)."),
    output: Path = typer.Option(Path("out/voicefleet.wav"), "--output", "-o", help="WAV for --say."),
    keep_serving: bool = typer.Option(True, "--keep-serving/--exit", help="Keep the endpoint up until Ctrl-C "
                                      "(--exit stops a local endpoint when done; a cluster's stays up)."),
    seed: int = typer.Option(0, help="Seeds sampling, training and synthesis."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local Ray)."),
) -> None:
    """Prepare, sweep (or train), register and serve a voice: one minute of speech to a live endpoint."""
    import time

    from voicefleet.recipes.end_to_end import EndToEndConfig, run_end_to_end

    out = Console()
    config = EndToEndConfig(
        list_file=list_file, voice=voice, pretrained=pretrained, workdir=workdir, storage=storage,
        mode="tune" if tune else "train", trials=trials, rounds=rounds, steps_per_round=steps_per_round,
        train_steps=train_steps, workers=workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size, serve=serve,
        host=host, port=port, say=say, say_lang=say_lang, output=str(output), seed=seed, address=address)
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

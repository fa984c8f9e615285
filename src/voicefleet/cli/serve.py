"""`voicefleet serve`: run the HTTP service on local Ray or a cluster.

    voicefleet serve --storage runs --pretrained pretrained_models --port 8000
"""

from __future__ import annotations

from typing import Optional

import typer

from voicefleet.cli.common import user_facing


@user_facing
def serve_cmd(
        storage: str = typer.Option("runs", help="Storage path; voices are read from <storage>/registry."),
        pretrained: str = typer.Option("pretrained_models", help="Official pretrained_models folder."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
        host: str = typer.Option("127.0.0.1", help="HTTP host (0.0.0.0 to listen on every interface)."),
        port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
        precision: str = typer.Option("fp32", help="fp32 (official numerics) or fast (int8/bf16 CPU)."),
        max_voices: int = typer.Option(4, min=1, help="Voices cached per synthesis replica."),
        replicas: int = typer.Option(1, min=1, help="Maximum synthesis replicas (autoscaling from 1)."),
        num_cpus: float = typer.Option(1.0, min=0, help="CPUs per synthesis replica."),
        num_gpus: float = typer.Option(0.0, min=0, help="GPUs (fractional) per synthesis replica."),
) -> None:
    """Serve every registered voice behind one endpoint (POST /v1/tts, /v1/audio/speech, /v1/voices)."""
    from voicefleet.models.pretrained import find_pretrained
    from voicefleet.serve.app import start
    from voicefleet.serve.settings import ServeSettings

    settings = ServeSettings(storage=storage, pretrained=pretrained, precision=precision,
                             max_voices_per_replica=max_voices, max_replicas=replicas, num_cpus=num_cpus,
                             num_gpus=num_gpus)
    find_pretrained(settings.pretrained)  # fail here, not inside a replica
    typer.echo(f"voicefleet serving on http://{host}:{port} (docs: /docs); Ctrl-C to stop")
    start(settings, address=address, host=host, port=port, blocking=True)

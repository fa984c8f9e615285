"""`voicefleet serve`: run the HTTP service on local Ray or a cluster.

    voicefleet serve --storage runs --pretrained pretrained_models --port 8000 --metrics-port 8080
    voicefleet serve --storage runs --pretrained pretrained_models --engine onnx   (voices exported with `export onnx`)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from voicefleet.cli.common import UserError, annotated_option, field_option, user_facing
from voicefleet.serve.settings import HTTP_HOST, HTTP_PORT, HttpHost, HttpPort, MetricsPort, ServeSettings


@user_facing
def serve_cmd(
        storage: str = field_option(ServeSettings, "storage"),
        pretrained: str = field_option(ServeSettings, "pretrained"),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
        host: str = annotated_option(HttpHost, HTTP_HOST, "--host"),
        port: int = annotated_option(HttpPort, HTTP_PORT, "--port"),
        metrics_port: Optional[int] = annotated_option(MetricsPort, None, "--metrics-port"),
        engine: str = field_option(ServeSettings, "engine"),
        precision: str = field_option(ServeSettings, "precision"),
        max_voices: int = field_option(ServeSettings, "max_voices_per_replica", "--max-voices"),
        replicas: int = field_option(ServeSettings, "max_replicas", "--replicas"),
        num_cpus: float = field_option(ServeSettings, "num_cpus"),
        num_gpus: float = field_option(ServeSettings, "num_gpus"),
        g2pw_model: Optional[Path] = field_option(ServeSettings, "g2pw_model", "--g2pw-model"),
) -> None:
    """Serve every registered voice behind one endpoint (POST /v1/tts, /v1/audio/speech, /v1/voices)."""
    from voicefleet.models.pretrained import find_pretrained
    from voicefleet.serve.app import start

    if metrics_port is not None and (address or os.environ.get("RAY_ADDRESS")):
        raise UserError("--metrics-port sets the port of the local Ray; a cluster's nodes export metrics on the "
                        "port of their `ray start --metrics-export-port` (see docs/metrics.md)")
    settings = ServeSettings(storage=storage, pretrained=pretrained, engine=engine, precision=precision,
                             max_voices_per_replica=max_voices, max_replicas=replicas, num_cpus=num_cpus,
                             num_gpus=num_gpus, g2pw_model=g2pw_model)
    find_pretrained(settings.pretrained)  # fail here, not inside a replica
    if settings.g2pw_model is not None:
        from voicefleet.text.g2pw import check_folder

        check_folder(settings.g2pw_model)
    typer.echo(f"voicefleet serving on http://{host}:{port} (docs: /docs); Ctrl-C to stop")
    start(settings, address=address, host=host, port=port, blocking=True, metrics_port=metrics_port,
          announce=typer.echo)

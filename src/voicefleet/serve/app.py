"""The Serve application, built when asked: `build_app(settings)`, or `app_builder(args)` for Serve.

    serve run serve_config.yaml
    serve deploy serve_config.yaml                          # on a running cluster
    serve run voicefleet.serve.app:app_builder              # settings from VOICEFLEET_SERVE_* variables
    serve run voicefleet.serve.app:app_builder max_replicas=4

Importing this module builds and validates nothing: settings (and the environment variables
behind them) are read when `app_builder` is called, so a bad variable fails the deployment that
uses it with the field named, never the import.
"""

# no `from __future__ import annotations`: Serve reads `app_builder`'s annotation as a class

import logging
from typing import Callable

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from voicefleet.platform.cluster import ensure_ray, metrics_urls
from voicefleet.serve.asgi import create_app
from voicefleet.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


@serve.deployment(name="Gateway", max_ongoing_requests=256)
@serve.ingress()
class Gateway:
    """HTTP ingress: validation, auth, limits and the registry; synthesis goes to `VoiceSynthesizer`."""

    def __init__(self, synthesizer: DeploymentHandle, settings: ServeSettings):
        self.synthesizer = synthesizer
        self.settings = settings

    def __serve_build_asgi_app__(self):
        return create_app(self.settings, self.synthesizer)


def synthesis_deployment(settings: ServeSettings):
    """The synthesis deployment of `settings.engine` (both are named `VoiceSynthesizer`). Imported
    here, when asked: the ONNX one's replicas never import torch, which the torch one needs."""
    if settings.engine == "onnx":
        from voicefleet.serve.onnx_synthesizer import OnnxVoiceSynthesizer

        return OnnxVoiceSynthesizer
    from voicefleet.serve.synthesizer import VoiceSynthesizer

    return VoiceSynthesizer


def build_app(settings: ServeSettings) -> Application:
    """Ingress + synthesis deployments, sized and limited by `settings`."""
    synthesizer = synthesis_deployment(settings).options(
        autoscaling_config=settings.autoscaling_config(),
        ray_actor_options=settings.ray_actor_options(),
        max_ongoing_requests=settings.max_ongoing_requests,
        health_check_period_s=10,
    ).bind(settings)
    return Gateway.options(ray_actor_options={"num_cpus": settings.gateway_num_cpus}).bind(synthesizer, settings)


def app_builder(args: ServeSettings) -> Application:
    """For `serve run|deploy`: Serve validates `args` (the YAML's `args`, or `key=value` after the
    import path) into `ServeSettings` (unknown or out-of-range fields fail with the field named);
    fields not given come from VOICEFLEET_SERVE_* variables or the defaults."""
    return build_app(ServeSettings.model_validate(args))  # a dict too, when called directly


def start(settings: ServeSettings, *, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          blocking: bool = True, metrics_port: int | None = None, announce: Callable[[str], None] = logger.info
          ) -> None:
    """Connect to Ray (local by default, or `address`), start Serve's HTTP proxy, run the app.

    `metrics_port` fixes the local Ray's Prometheus port; `announce` is told where every node's
    metrics are (docs/metrics.md)."""

    ensure_ray(address, log_to_driver=True, metrics_export_port=metrics_port)
    for url in metrics_urls():
        announce(f"metrics (Prometheus): {url}")
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings), name="voicefleet", route_prefix="/", blocking=blocking)


def wait_until_ready(url: str, timeout_s: float = 180.0) -> None:
    """Block until `GET {url}/readyz` answers 200 (every synthesis replica loaded its shared models)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"the voicefleet app at {url} was not ready within {timeout_s:.0f} s ({last})")

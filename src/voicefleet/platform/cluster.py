"""The one place voicefleet connects to Ray.

Every entry point (prepare, train, tune, serve, run, the benchmarks and the test session) calls
`ensure_ray`: it joins the cluster at `address` (or `RAY_ADDRESS`, or `auto` on a node started with
`ray start`), or starts the embedded local Ray when there is none, and does nothing in a process
that is already connected.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# Train V2 is the API voicefleet is written against (Tune wraps a function that runs a TorchTrainer).
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, object_store_bytes: int | None = None,
               log_to_driver: bool = False, configure_logging: bool = True,
               metrics_export_port: int | None = None) -> bool:
    """Connect this process to Ray unless it already is; returns whether it connected now.

    `address` (else `RAY_ADDRESS`) joins an existing cluster, whose resources are the cluster's own
    (`num_cpus` and `object_store_bytes` apply to an embedded local instance only). Without either, a
    local Ray starts without its dashboard. `log_to_driver` forwards workers' logs to this process
    (off by default: voicefleet prints its own progress and tables); `configure_logging` lets Ray set
    up its own log handlers (the test session turns it off to keep pytest's). `metrics_export_port`
    fixes where the local instance exports Prometheus metrics (default: a free port; a cluster's
    nodes set theirs with `ray start --metrics-export-port`); `metrics_urls` says where they are.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=configure_logging)
    else:
        logger.info("starting a local Ray instance")
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes, include_dashboard=False,
                 log_to_driver=log_to_driver, configure_logging=configure_logging,
                 _metrics_export_port=metrics_export_port)
    return True


def metrics_urls() -> list[str]:
    """The Prometheus endpoint of every live node of the connected Ray (one per node: each exports
    the metrics of the processes it runs)."""
    import ray

    return [f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            for node in ray.nodes() if node.get("Alive") and node.get("MetricsExportPort")]

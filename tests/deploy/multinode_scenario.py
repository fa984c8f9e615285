"""Train and serve on a two-node Ray cluster (two raylets on this machine), in its own process.

    python -m tests.deploy.multinode_scenario WORKDIR

`ray.cluster_utils.Cluster` starts a head and a worker node of 1 CPU each. A 2-worker SoVITS run
with STRICT_SPREAD placement must put one worker on each node and finish; then the Serve app runs
2 synthesis replicas of 1 CPU each (so one per node) and serves the voice the run just exported.
Where things ran is read back from Ray, not assumed: each training worker writes its node id
(worker.py's `PID_DIR_ENV` hook) and the Serve controller reports each replica's node.

The last stdout line is a JSON summary that tests/deploy/test_multinode.py checks. This runs in a
separate process because the test session already holds its own local Ray (`ray_session`).
"""

from __future__ import annotations

import faulthandler
import io
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NODE_CPUS = 1
# Two object stores on one CI machine; the tiny models need a few MB.
OBJECT_STORE_BYTES = 128 * 1024 * 1024
READY_TIMEOUT_S = 120
STACKS_AFTER_S = 300  # still running then: dump every thread's stack to stderr (the test gives up at 420 s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(workdir: Path) -> tuple[Path, Any]:
    """A tiny prepared dataset and a tiny pretrained folder under `workdir`."""
    from tests.platform.training.synthetic import learnable_examples, write_dataset
    from voicefleet.models.pretrained import init_pretrained

    train, val = learnable_examples(4, seed=0), learnable_examples(2, seed=1, prefix="val")
    dataset = write_dataset(workdir / "dataset", train + val, ["train"] * 4 + ["val"] * 2)
    return dataset, init_pretrained(workdir / "pretrained", "tiny", seed=0)


def train_on_two_nodes(workdir: Path, dataset: Path, pretrained) -> dict[str, Any]:
    """A 2-worker STRICT_SPREAD run; returns its result and the node each rank ran on."""
    from voicefleet.platform.training.api import train_stage
    from voicefleet.platform.training.config import TrainConfig
    from voicefleet.platform.training.worker import PID_DIR_ENV

    marks = workdir / "worker-marks"
    marks.mkdir()
    os.environ[PID_DIR_ENV] = str(marks)  # train_stage hands it to the workers' runtime env
    config = TrainConfig(stage="sovits", run_name="multinode-s2", storage_path=str(workdir / "runs"),
                         num_workers=2, cpus_per_worker=NODE_CPUS, placement_strategy="STRICT_SPREAD",
                         batch_size=2, epochs=100, max_steps=2, eval_every=2, checkpoint_every=2,
                         max_failures=0)
    started = time.monotonic()
    result = train_stage(config, dataset, pretrained.root)
    return {"seconds": round(time.monotonic() - started, 1), "steps": result.steps,
            "exported": result.exported, "exported_exists": Path(result.exported).is_file(),
            "worker_nodes": {p.stem: p.read_text() for p in sorted(marks.glob("rank*.node"))}}


def serve_on_two_nodes(workdir: Path, exported: str, pretrained) -> dict[str, Any]:
    """The Serve app with 2 synthesis replicas; returns their nodes and one /v1/tts answer."""
    import httpx
    import soundfile as sf
    from ray import serve
    from ray.serve.schema import ServeInstanceDetails

    from voicefleet.platform.data.synthetic import voice_like
    from voicefleet.platform.voices import registry_for
    from voicefleet.serve.app import build_app, wait_until_ready
    from voicefleet.serve.settings import ServeSettings

    storage = workdir / "serve-storage"
    storage.mkdir()
    reference = storage / "reference.wav"
    sf.write(reference, voice_like(4.0, 32000, seed=0), 32000, subtype="PCM_16")
    registry_for(str(storage)).register("multinode", gpt=pretrained.gpt, sovits=exported, reference=reference,
                                        prompt_text="你好。", prompt_lang="zh")
    settings = ServeSettings(storage=str(storage), pretrained=str(pretrained.root), min_replicas=2,
                             max_replicas=2, num_cpus=NODE_CPUS, synthesis_threads=1)
    port = _free_port()
    # One HTTP proxy: both nodes share this machine's loopback, a proxy per node is not what we test here.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        started = time.monotonic()
        serve.run(build_app(settings), name="voicefleet", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, timeout_s=READY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        # The controller's view (what `serve status` and the dashboard show), with each replica's node.
        # Public schema; reached through the client because the state API needs the dashboard we keep off.
        details = ServeInstanceDetails(**serve.context._get_global_client().get_serve_details())
        replicas = details.applications["voicefleet"].deployments["VoiceSynthesizer"].replicas
        body = {"voice": "multinode", "text": "今天天气很好。", "lang": "zh", "seed": 0, "max_tokens": 20}
        response = httpx.post(f"{url}/v1/tts", json=body, timeout=120)
        audio = {"status": response.status_code, "content_type": response.headers.get("content-type"),
                 "samples": 0, "sample_rate": 0}
        if response.status_code == 200:
            wave, sr = sf.read(io.BytesIO(response.content))
            audio.update(samples=len(wave), sample_rate=sr)
        else:
            audio["body"] = response.text[:500]
        return {"ready_seconds": round(ready_s, 1), "replica_states": [r.state.value for r in replicas],
                "replica_nodes": [r.node_id for r in replicas], "tts": audio}
    finally:
        serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    import ray
    from ray.cluster_utils import Cluster

    from voicefleet.platform.cluster import ensure_ray

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tests.deploy.multinode_scenario WORKDIR", file=sys.stderr)
        return 2
    workdir = Path(argv[0]).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.pop("RAY_ADDRESS", None)  # our own cluster, never one found in the environment
    # A test that times out sends SIGINT, then we clean up and report (not SIGTERM: Ray's core worker takes that
    # one over and aborts). Set explicitly: a process started in the background may inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.dump_traceback_later(STACKS_AFTER_S)
    dataset, pretrained = _inputs(workdir)

    summary: dict[str, Any] = {"ok": False}
    started = time.monotonic()
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False)
        cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=OBJECT_STORE_BYTES)
        cluster.wait_for_nodes()
        ensure_ray(cluster.address, configure_logging=False)
        summary["nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        summary["train"] = train_on_two_nodes(workdir, dataset, pretrained)
        summary["serve"] = serve_on_two_nodes(workdir, summary["train"]["exported"], pretrained)
        summary["ok"] = True
    # BaseException: once training started, SIGINT goes to Ray Train's handler, which aborts the run and then
    # raises SystemExit; the summary is still owed.
    except BaseException as e:  # reported in the summary; the traceback goes to stderr
        logger.exception("multi-node scenario failed")
        summary["error"] = f"{type(e).__name__}: {e}"[:2000]
    finally:
        faulthandler.cancel_dump_traceback_later()
        ray.shutdown()
        cluster.shutdown()  # every node it started, head last
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

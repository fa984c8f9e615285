"""Two Ray nodes: a 2-worker training run puts one worker on each and finishes; Serve runs replicas on both.

The scenario (tests/deploy/multinode_scenario.py) builds its own `ray.cluster_utils.Cluster`, so it
runs in a child process: this test session's local Ray (`ray_session`) must not be disturbed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two raylets, a Ray Train run and a Serve app

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 420


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("multinode")
    # a clean Ray environment: no address to join, and the Ray Train version the project targets
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TRAIN_V2_ENABLED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "tests.deploy.multinode_scenario", str(workdir)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the scenario shuts its cluster down and still prints its summary
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # its Ray processes share its fate (Ray's kernel fate-sharing on Linux)
            stdout, stderr = proc.communicate()
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = None
    if proc.returncode != 0 or result is None or not result.get("ok"):
        pytest.fail(f"scenario exited {proc.returncode}; summary {result}\n--- stderr tail ---\n{stderr[-6000:]}",
                    pytrace=False)
    return result


def test_cluster_has_two_nodes(summary):
    assert len(summary["nodes"]) == 2


def test_training_places_one_worker_per_node_and_completes(summary):
    train = summary["train"]
    assert train["steps"] == 2
    assert train["exported_exists"] and train["exported"].endswith(".pth")
    nodes = train["worker_nodes"]
    assert sorted(nodes) == ["rank0", "rank1"]
    assert nodes["rank0"] != nodes["rank1"]
    assert set(nodes.values()) == set(summary["nodes"])


def test_serve_runs_replicas_on_both_nodes_and_answers(summary):
    serve = summary["serve"]
    assert len(serve["replica_nodes"]) == 2
    assert set(serve["replica_nodes"]) == set(summary["nodes"])
    assert serve["replica_states"] == ["RUNNING", "RUNNING"]
    tts = serve["tts"]
    assert tts["status"] == 200, tts
    assert tts["content_type"] == "audio/wav" and tts["sample_rate"] == 32000 and tts["samples"] > 0

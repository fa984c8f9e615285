"""cluster.yaml passes the checks `ray up` runs before it touches a cloud (defaults + schema)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_is_valid(config):
    prepared = _validate(config)
    assert prepared["head_node_type"] == "head"
    gpu = prepared["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1  # autoscaling GPU workers
    assert prepared["idle_timeout_minutes"] > 0
    assert any("torch==2.13.0" in c for c in prepared["setup_commands"])
    assert "/home/ubuntu/pretrained_models" in prepared["file_mounts"]


@pytest.mark.parametrize("breakage", ["typo_top_level", "typo_node_field", "bad_type", "missing_head"])
def test_broken_copies_fail_validation(config, breakage):
    broken = copy.deepcopy(config)
    if breakage == "typo_top_level":
        broken["idle_timeout_minute"] = broken.pop("idle_timeout_minutes")
    elif breakage == "typo_node_field":
        broken["available_node_types"]["gpu_worker"]["max_worker"] = 8
    elif breakage == "bad_type":
        broken["max_workers"] = "eight"
    else:
        del broken["available_node_types"]["head"]
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _validate(broken)

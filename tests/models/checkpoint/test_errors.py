"""CheckpointError must survive pickling: Ray re-raises a worker's exception in the driver by unpickling it."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from voicefleet.models.checkpoint import CheckpointError


def test_pickle_round_trip_keeps_type_message_and_attributes():
    err = CheckpointError("/data/s2D.pth", "shape (4, 1) != expected (8, 1)", key="discriminators.0.post.bias")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is CheckpointError
    assert str(back) == str(err) == "/data/s2D.pth: key 'discriminators.0.post.bias': shape (4, 1) != expected (8, 1)"
    assert back.path == Path("/data/s2D.pth") and back.key == "discriminators.0.post.bias"
    assert back.message == "shape (4, 1) != expected (8, 1)"


def test_pickle_round_trip_without_path_or_key():
    back = pickle.loads(pickle.dumps(CheckpointError(None, "not a torch checkpoint")))
    assert str(back) == "not a torch checkpoint" and back.path is None and back.key is None



@pytest.mark.slow
def test_crosses_a_ray_task_boundary(ray_session):
    @ray_session.remote
    def load():
        raise CheckpointError("/w/s2D.pth", "is a GPT-SoVITS v2Pro/v2ProPlus SoVITS discriminator")

    with pytest.raises(CheckpointError) as err:
        ray_session.get(load.remote())
    assert "/w/s2D.pth: is a GPT-SoVITS v2Pro/v2ProPlus SoVITS discriminator" in str(err.value)
    assert err.value.path == Path("/w/s2D.pth")

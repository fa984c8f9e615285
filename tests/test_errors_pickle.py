"""Every user-facing exception type must survive pickling with its type and message.

Ray moves exceptions between processes by pickling them (a Train worker's error is re-raised in
the driver, a Serve replica's in the ingress); a type whose `__init__` does not take `self.args`
back fails to unpickle and the user gets Ray's unpickling error instead of the real message.
"""

from __future__ import annotations

import pickle

import pytest

from voicefleet.cli.common import UserError
from voicefleet.models.checkpoint import CheckpointError
from voicefleet.models.config import ConfigError
from voicefleet.inference.pipeline import SynthesisError
from voicefleet.models.pretrained import PretrainedError
from voicefleet.text.frontend import TextFrontendError
from voicefleet.platform.data.listfile import ListFileError
from voicefleet.platform.registry import RegistryError, StorageFull, VoiceDamaged, VoiceExists, VoiceNotFound
from voicefleet.platform.training.api import TrainingError
from voicefleet.serve.errors import RequestFailed

ERRORS = [
    UserError("bad input"),
    CheckpointError("/w/s2G.pth", "missing", key="enc_p.proj.weight"),
    ConfigError("unknown key 'x'"),
    SynthesisError("empty text"),
    PretrainedError("pretrained folder /p does not exist"),
    TextFrontendError("language 'ja' is not supported"),
    ListFileError("list.txt line 3: expected 4 fields"),
    RegistryError("invalid voice id 'A'"),
    VoiceNotFound("alice", "s3://bucket/registry"),
    VoiceExists("alice", "/srv/registry"),
    VoiceDamaged("alice", "/srv/registry"),
    StorageFull("alice"),
    TrainingError("run r1 failed: ValueError: no training clips"),
    RequestFailed(404, "not_found", "voice 'alice' not found"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_pickle_round_trip_keeps_type_and_message(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert vars(back) == vars(err)


def test_sweep_error_pickles():
    from voicefleet.tuning.sweep import SweepError

    back = pickle.loads(pickle.dumps(SweepError("no trial finished")))
    assert type(back) is SweepError and str(back) == "no trial finished"

"""`checkpointing.report` / `resume` against a stand-in for Ray Train's session functions.

The Ray runs (`test_train_ray.py`, `tests/tuning/test_sweep_ray.py`) exercise them for real; these
check the rank split and the RNG round trip without starting a cluster.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import ray.train
import torch

from voicefleet.platform.training import checkpointing


@dataclass
class FakeSession:
    """What a worker sees of Ray Train: its rank, `report` (which copies a checkpoint into storage
    before it returns, as Ray Train does) and `get_checkpoint`."""

    storage: Path
    rank: int = 0
    world: int = 1
    reports: list[dict] = field(default_factory=list)
    restored: Path | None = None

    def get_world_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world

    def report(self, metrics, checkpoint=None, checkpoint_dir_name=None):
        stored = None
        if checkpoint is not None:
            stored = self.storage / (checkpoint_dir_name or f"checkpoint_{len(self.reports)}")
            shutil.copytree(checkpoint.path, stored)
            self.staged = Path(checkpoint.path)
        self.reports.append({"metrics": metrics, "checkpoint": stored})

    def get_checkpoint(self):
        return ray.train.Checkpoint.from_directory(str(self.restored)) if self.restored else None


@pytest.fixture
def session(tmp_path, monkeypatch) -> FakeSession:
    fake = FakeSession(tmp_path / "storage")
    monkeypatch.setattr(ray.train, "get_context", lambda: fake)
    monkeypatch.setattr(ray.train, "report", fake.report)
    monkeypatch.setattr(ray.train, "get_checkpoint", fake.get_checkpoint)
    return fake


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rank_0_writes_the_state_with_every_ranks_rng_then_reports_it(session):
    checkpointing.report({"loss": 1.5}, checkpoint_state=lambda: {"step": 7}, dir_name="checkpoint_step0000007")
    (only,) = session.reports
    assert only["metrics"] == {"loss": 1.5}
    assert only["checkpoint"].name == "checkpoint_step0000007"
    assert [p.name for p in only["checkpoint"].iterdir()] == [checkpointing.STATE_FILE]
    state = checkpointing.load_state(ray.train.Checkpoint.from_directory(str(only["checkpoint"])))
    assert state["step"] == 7 and len(state["rng"]) == 1
    assert not session.staged.exists()  # the temporary folder is gone once the report returns


def test_other_ranks_report_metrics_only_and_build_no_state(session):
    session.rank, session.world = 1, 2

    def never():
        raise AssertionError("only rank 0 builds the state")

    checkpointing.report({"loss": 1.5}, checkpoint_state=never, dir_name="checkpoint_step0000007")
    assert session.reports == [{"metrics": {"loss": 1.5}, "checkpoint": None}]


def test_report_without_a_state_writes_no_checkpoint(session):
    checkpointing.report({"loss": 2.0})
    assert session.reports == [{"metrics": {"loss": 2.0}, "checkpoint": None}]


def test_resume_gives_the_state_back_and_continues_the_random_stream(session):
    assert checkpointing.resume("cpu") is None  # a fresh start
    torch.manual_seed(3)
    checkpointing.report({}, checkpoint_state=lambda: {"step": 2}, dir_name="c")
    expected = _draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # a restarted worker seeds afresh
    session.restored = session.reports[-1]["checkpoint"]
    state = checkpointing.resume("cpu")
    assert state["step"] == 2
    assert _draws() == expected


def test_a_rank_the_checkpoint_did_not_have_takes_the_last_saved_stream(session):
    checkpointing.report({}, checkpoint_state=lambda: {}, dir_name="c")
    expected = _draws()
    session.restored, session.rank, session.world = session.reports[-1]["checkpoint"], 3, 4
    checkpointing.resume("cpu")
    assert _draws() == expected

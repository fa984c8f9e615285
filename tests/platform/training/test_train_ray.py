"""Distributed fine-tuning on a real local Ray: 2 CPU workers (gloo DDP), resume, fault tolerance."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.platform.training.synthetic import learnable_examples
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.platform.training.api import train_stage
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.data import examples_table, load_examples
from voicefleet.platform.training.worker import PID_DIR_ENV

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    train, val = learnable_examples(8, seed=0), learnable_examples(2, seed=1, prefix="val")
    folder = tmp_path_factory.mktemp("dataset")
    (folder / "data").mkdir()
    pq.write_table(examples_table(train + val, ["train"] * 8 + ["val"] * 2), folder / "data" / "part-0.parquet")
    return folder


def _metrics(result) -> list[dict[str, str]]:
    with open(Path(result.output_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _config(tmp_path, stage, **kw):
    base = dict(stage=stage, run_name=f"{stage}-{uuid.uuid4().hex[:8]}", storage_path=str(tmp_path / "runs"),
                num_workers=2, batch_size=2, epochs=100, max_steps=12, eval_every=3, checkpoint_every=3,
                sovits_lr=1e-3, gpt_lr_ratio=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_dataset_round_trip(dataset):
    train = load_examples(dataset, "train")
    assert len(train) == 8 and len(load_examples(dataset, "val")) == 2
    assert train[0].hubert.shape[0] == 768 and train[1].bert is not None


def test_sovits_two_workers_lower_validation_loss_and_export(ray_session, dataset, tiny_pretrained, tmp_path):
    cfg = _config(tmp_path, "sovits")
    result = train_stage(cfg, dataset, tiny_pretrained.root)
    assert result.steps == cfg.max_steps
    first_val = float(_metrics(result)[0]["val_recon"])
    assert result.best_val_recon < first_val
    loaded = load_sovits(result.exported)
    assert not loaded.has_posterior and loaded.info.endswith("iteration")
    assert (Path(result.output_dir) / "curves.png").stat().st_size > 10_000
    assert any(Path(result.output_dir, "tb").iterdir())
    # a second call with the same run name does no work and returns the same result
    t = time.time()
    assert train_stage(cfg, dataset, tiny_pretrained.root) == result
    assert time.time() - t < 5


def test_gpt_two_workers_lower_validation_loss_and_export(ray_session, dataset, tiny_pretrained, tmp_path):
    cfg = _config(tmp_path, "gpt", max_steps=18)
    result = train_stage(cfg, dataset, tiny_pretrained.root)
    assert result.best_val_recon < float(_metrics(result)[0]["val_ce"])
    model, _, info = load_gpt(result.exported)
    assert info.info.startswith("GPT-e")


def test_killed_worker_restarts_from_last_checkpoint(ray_session, dataset, tiny_pretrained, tmp_path, monkeypatch):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    monkeypatch.setenv(PID_DIR_ENV, str(pid_dir))
    cfg = _config(tmp_path, "sovits", max_steps=15, max_failures=2)
    run_dir = Path(cfg.storage_path) / cfg.run_name
    killed = {}

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline:
            # two checkpoints on disk: the first one is certainly registered with Ray by now
            if len(list(run_dir.glob("checkpoint_step*"))) >= 2 and (pid_dir / "rank1.pid").exists():
                pid = int((pid_dir / "rank1.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = train_stage(cfg, dataset, tiny_pretrained.root)
    thread.join()
    assert "pid" in killed, "no worker was killed"
    assert result.steps == cfg.max_steps
    assert int((pid_dir / "rank1.pid").read_text()) != killed["pid"]  # a new worker took over
    # training went on from the last checkpoint, not from zero, and the history is whole
    assert len(result.resumed_at_steps) == 1 and result.resumed_at_steps[0] >= cfg.checkpoint_every
    steps = [int(float(row["step"])) for row in _metrics(result)]
    assert steps == list(range(cfg.eval_every, cfg.max_steps + 1, cfg.eval_every))

"""Distributed fine-tuning on a real local Ray: 2 CPU workers (gloo DDP), resume, fault tolerance."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.platform.training.synthetic import learnable_examples, synthesize_registered, write_dataset
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.platform.training.api import train_stage
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.data import load_examples
from voicefleet.platform.training.worker import PID_DIR_ENV

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    train, val = learnable_examples(8, seed=0), learnable_examples(2, seed=1, prefix="val")
    return write_dataset(tmp_path_factory.mktemp("dataset"), train + val, ["train"] * 8 + ["val"] * 2)


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
    # the recipe and every optimizer/schedule setting are in report.json
    report = json.loads(Path(result.output_dir, "report.json").read_text())
    assert report["recipe"] == cfg.recipe and report["settings"] == cfg.settings()
    assert TrainConfig(**report["config"]) == cfg
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
            # kill only once Ray Train's controller has registered a checkpoint (its snapshot names
            # one): a checkpoint on disk whose report the controller has not polled yet dies with
            # the worker, and the group would rightly restart from zero
            snapshot = run_dir / "checkpoint_manager_snapshot.json"
            registered = snapshot.exists() and "checkpoint_step" in snapshot.read_text()
            if registered and (pid_dir / "rank1.pid").exists():
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


def test_run_killed_after_its_last_checkpoint_resumes_without_training_again(ray_session, dataset, tiny_pretrained,
                                                                              tmp_path, monkeypatch):
    # a driver that fails after the last checkpoint while writing the result (the disk fills half
    # way through report.json): no torn report is left, and the re-run resumes at the final step,
    # trains nothing, records the resume and keeps the history whole
    import errno

    cfg = _config(tmp_path, "sovits", num_workers=1, max_steps=4, eval_every=2, checkpoint_every=2)
    out_dir = Path(cfg.storage_path) / cfg.run_name / "voicefleet"
    write_text = Path.write_text

    def disk_fills_during_the_report(self, data, *args, **kwargs):
        if self.name.startswith((".report.json", "report.json")):
            write_text(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, data, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", disk_fills_during_the_report)
        with pytest.raises(OSError, match="No space left"):
            train_stage(cfg, dataset, tiny_pretrained.root)
    assert not (out_dir / "report.json").exists()
    with open(out_dir / "metrics.csv") as f:
        first_rows = list(csv.DictReader(f))
    again = train_stage(cfg, dataset, tiny_pretrained.root)
    assert again.resumed_at_steps == [4] and again.steps == 4
    rows = _metrics(again)
    assert [r["step"] for r in rows] == [r["step"] for r in first_rows] == ["2", "4"]
    assert rows[0]["val_recon"] == first_rows[0]["val_recon"]
    assert Path(again.exported).is_file()


@pytest.fixture(scope="module")
def dataset_with_reference(tmp_path_factory):
    """Like `dataset`, plus a 4-5 s validation clip that can serve as the voice's reference."""
    import numpy as np

    train, val = learnable_examples(8, seed=0), learnable_examples(2, seed=1, prefix="val")
    long = learnable_examples(1, seed=2, prefix="long")[0]
    reps = 5
    long.wav32k = np.tile(long.wav32k, reps)
    long.hubert = np.tile(long.hubert, (1, reps))
    long.semantic = list(long.semantic) * reps
    return write_dataset(tmp_path_factory.mktemp("dataset_ref"), train + val + [long],
                         ["train"] * 8 + ["val"] * 3)


def _cli(*args):
    from typer.testing import CliRunner

    from voicefleet.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_trains_registers_and_the_voice_synthesises(ray_session, dataset_with_reference, tiny_pretrained,
                                                        reference_wav, tmp_path):
    from voicefleet.platform.voices import registry_for

    storage = tmp_path / "runs"
    result = _cli("train", "sovits", dataset_with_reference, "--pretrained", tiny_pretrained.root, "--run-name",
                  "cli-s2", "--storage", storage, "--workers", "2", "--batch-size", "2", "--max-steps", "6",
                  "--eval-every", "3", "--checkpoint-every", "3", "--voice", "alice")
    assert result.exit_code == 0, result.output
    assert "registered voice" in result.output and "alice" in result.output
    registry = registry_for(str(storage))
    record = registry.get("alice")
    assert record.lineage["sovits_run"] == "cli-s2" and record.lineage["reference_clip"].startswith("long")
    assert len(synthesize_registered(registry, "alice", tiny_pretrained)) > 0


def _recorded_checkpoint(run_dir: Path) -> bool:
    import json

    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return bool(json.loads(snapshot.read_text()).get("latest_checkpoint_result"))
    except (OSError, ValueError):  # not written yet, or being written
        return False


def test_stopped_driver_resumes_and_a_new_name_starts_fresh(ray_session, dataset, tiny_pretrained, tmp_path):
    import subprocess
    import sys

    storage = tmp_path / "runs"
    args = ["train", "sovits", str(dataset), "--pretrained", str(tiny_pretrained.root), "--run-name", "resumable",
            "--storage", str(storage), "--workers", "1", "--batch-size", "2", "--max-steps", "12",
            "--eval-every", "2", "--checkpoint-every", "2"]
    proc = subprocess.Popen([sys.executable, "-c", "from voicefleet.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir = storage / "resumable"
    deadline = time.time() + 240
    # a checkpoint folder is written before Ray Train records it; a resume starts from what the
    # run's checkpoint-manager snapshot records, so wait until that names a checkpoint
    while time.time() < deadline and proc.poll() is None and not (
            len(list(run_dir.glob("checkpoint_step*"))) >= 2 and _recorded_checkpoint(run_dir)):
        time.sleep(0.5)
    assert proc.poll() is None, "the first driver ended before it could be stopped"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops the driver
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "voicefleet" / "report.json").exists()

    cfg = TrainConfig(stage="sovits", run_name="resumable", storage_path=str(storage), num_workers=1, batch_size=2,
                      max_steps=12, eval_every=2, checkpoint_every=2)
    resumed = train_stage(cfg, dataset, tiny_pretrained.root)
    assert resumed.resumed_at_steps and resumed.resumed_at_steps[0] >= 2 and resumed.steps == 12
    fresh = train_stage(cfg.model_copy(update={"run_name": "fresh", "max_steps": 4}), dataset, tiny_pretrained.root)
    assert fresh.resumed_at_steps == []


def test_early_stopping_and_verdicts_in_a_real_run(ray_session, dataset, tiny_pretrained, tmp_path):
    from voicefleet.platform.training.monitor import MonitorConfig

    # an improvement threshold no run can meet: the monitor must stop the run at its patience
    cfg = _config(tmp_path, "sovits", num_workers=1, max_steps=30,
                  monitor=MonitorConfig(patience=1, min_delta=1e6, min_evaluations=2, window=2))
    result = train_stage(cfg, dataset, tiny_pretrained.root)
    assert result.stopped_early and result.steps < cfg.max_steps
    assert any("stopping early" in v for v in result.verdicts)
    report = (Path(result.output_dir) / "report.json").read_text()
    assert "stopping early" in report


def _checkpoint_steps(run_dir: Path) -> tuple[int | None, int | None]:
    """(step of the checkpoint Ray Train has recorded, step of the newest checkpoint folder on disk)."""
    import re

    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    recorded = None
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        steps = re.findall(r"checkpoint_step(\d{7})", json.dumps(latest)) if latest else []
        recorded = int(steps[0]) if steps else None
    except (OSError, ValueError):  # not written yet, or being written
        pass
    on_disk = [int(p.name[len("checkpoint_step"):][:7]) for p in run_dir.glob("checkpoint_step*")]
    return recorded, max(on_disk, default=None)


def test_driver_killed_during_a_checkpoint_write_resumes_and_registers_the_voice_once(
        ray_session, dataset_with_reference, tiny_pretrained, tmp_path):
    import subprocess
    import sys

    from voicefleet.platform.voices import registry_for

    storage, every = tmp_path / "runs", 2
    args = ["train", "sovits", str(dataset_with_reference), "--pretrained", str(tiny_pretrained.root), "--run-name",
            "torn", "--storage", str(storage), "--workers", "1", "--batch-size", "2", "--max-steps", "12",
            "--eval-every", str(every), "--checkpoint-every", str(every), "--voice", "torn-voice",
            "--address", ray_session.get_runtime_context().gcs_address]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", "from voicefleet.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    run_dir = storage / "torn"
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        recorded, newest = _checkpoint_steps(run_dir)
        # a newer checkpoint is on disk than the one Ray Train has recorded: it is being written
        if recorded is not None and newest is not None and newest > recorded:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole driver, without any chance to clean up
            killed = (recorded, newest)
            break
        time.sleep(0.02)
    proc.wait()
    assert killed, "the driver was not caught writing a checkpoint"
    recorded, newest = killed
    torn = run_dir / f"checkpoint_step{newest:07d}" / "state.pt"
    if torn.exists():  # make the interrupted write a torn one, whatever the kill left
        torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    assert not (run_dir / "voicefleet" / "report.json").exists()
    assert not registry_for(str(storage)).exists("torn-voice")

    result = _cli(*args[:-2])  # the same command again
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "voicefleet" / "report.json").read_text())
    assert report["steps"] == 12 and len(report["resumed_at_steps"]) == 1
    resumed = report["resumed_at_steps"][0]
    assert recorded <= resumed and newest - resumed <= every  # at most one checkpoint interval lost
    steps = [int(r["step"]) for r in csv.DictReader(open(run_dir / "voicefleet" / "metrics.csv"))]
    assert steps == list(range(every, 13, every))  # the history is whole, each step once
    assert load_sovits(report["exported"]).info.endswith("iteration")  # the final weights load
    registry = registry_for(str(storage))
    record = registry.get("torn-voice")
    assert record.version == 1 and record.lineage["sovits_run"] == "torn"
    assert load_sovits(registry.local_files("torn-voice")["sovits"]).model is not None

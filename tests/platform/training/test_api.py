"""`train_stage`'s driver side: failures reach the user as one `TrainingError` line naming the run and the
worker's own reason; wrong pretrained files fail before Ray starts; `--gpu` on a fixed CPU cluster fails fast."""

from __future__ import annotations

import shutil
import uuid

import pytest
from ray.train import ControllerError, WorkerGroupError

from tests.platform.training.synthetic import learnable_examples, write_dataset
from voicefleet.models.checkpoint import CheckpointError
from voicefleet.platform.training.api import TrainingError, check_gpus, failure_reason, train_stage
from voicefleet.platform.training.config import TrainConfig


def _config(tmp_path, stage="sovits", **kw):
    base = dict(stage=stage, run_name=f"{stage}-{uuid.uuid4().hex[:8]}", storage_path=str(tmp_path / "runs"),
                num_workers=1, batch_size=2, max_steps=2, eval_every=1, checkpoint_every=1, max_failures=0)
    return TrainConfig(**{**base, **kw})


def _cli(*args):
    from typer.testing import CliRunner

    from voicefleet.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# --- check_gpus ---------------------------------------------------------------------------------

def test_enough_gpus_pass():
    assert check_gpus(2, 2.0, can_autoscale=False) is None
    assert check_gpus(1, 8.0, can_autoscale=True) is None


def test_fixed_cluster_without_gpus_fails_with_what_to_do():
    with pytest.raises(TrainingError) as err:
        check_gpus(2, 0, can_autoscale=False)
    message = str(err.value)
    assert "2 GPUs asked for" in message and "has 0" in message
    assert "drop --gpu" in message and "GPUs" in message


def test_autoscaling_cluster_only_warns():
    warning = check_gpus(4, 1.0, can_autoscale=True)
    assert "4 GPUs asked for" in warning and "has 1" in warning and "autoscaler" in warning


# --- failure_reason ------------------------------------------------------------------------------

def test_reason_is_the_first_workers_own_exception():
    error = WorkerGroupError("multi-line summary\nwith a traceback", {
        1: RuntimeError("gloo connection closed"),
        0: CheckpointError("/p/s2G.pth", "is a GPT-SoVITS v2Pro file"),
    })
    assert failure_reason(error) == ("CheckpointError: /p/s2G.pth: is a GPT-SoVITS v2Pro file "
                                     "(worker 0; 1 more worker failed)")


def test_reason_of_a_controller_failure_and_of_a_cause_chain():
    assert failure_reason(ControllerError(ValueError("bad\nstorage"))) == "ValueError: bad storage"
    try:
        try:
            raise KeyError("state.pt")
        except KeyError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        assert failure_reason(outer) == "KeyError: 'state.pt'"


def test_long_reasons_are_cut_to_one_short_line():
    reason = failure_reason(WorkerGroupError("x", {0: RuntimeError("actor died\n" * 200)}))
    assert "\n" not in reason and len(reason) < 600 and reason.endswith("... (worker 0)")


# --- train_stage ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_as_s2g(tiny_pretrained, tmp_path_factory):
    """A pretrained folder whose s2G is an exported voice: no posterior encoder, so nothing to fine-tune."""
    from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export

    root = tmp_path_factory.mktemp("wrong") / "pretrained"
    shutil.copytree(tiny_pretrained.root, root)
    model = load_sovits(tiny_pretrained.sovits_g).model
    save_sovits_export(model, root / tiny_pretrained.sovits_g.relative_to(tiny_pretrained.root), overwrite=True)
    return root


def test_wrong_pretrained_file_fails_before_ray(exported_as_s2g, tmp_path, monkeypatch):
    import ray
    import ray.train.torch

    def not_for_a_run_that_cannot_start(*args, **kwargs):
        raise AssertionError("Ray was asked to start a run whose pretrained files cannot build the stage")

    monkeypatch.setattr(ray, "init", not_for_a_run_that_cannot_start)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", not_for_a_run_that_cannot_start)
    with pytest.raises(ValueError, match="has no posterior encoder"):
        train_stage(_config(tmp_path), tmp_path, exported_as_s2g)
    result = _cli("train", "sovits", tmp_path, "--pretrained", exported_as_s2g, "--run-name", "wrong",
                  "--storage", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    [line] = _error_lines(result.output)
    assert "has no posterior encoder" in line and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_gpu_run_on_a_cluster_this_process_started_fails_fast(ray_session, tiny_pretrained, tmp_path):
    assert ray_session.cluster_resources().get("GPU", 0) == 0  # the session's Ray is CPU-only
    with pytest.raises(TrainingError, match=r"1 GPU asked for .* has 0 .*drop --gpu"):
        train_stage(_config(tmp_path, use_gpu=True), tmp_path, tiny_pretrained.root)
    result = _cli("train", "sovits", tmp_path, "--pretrained", tiny_pretrained.root, "--run-name", "gpu",
                  "--storage", tmp_path / "runs", "--gpu", "--workers", "2")
    assert result.exit_code == 2, result.output
    [line] = _error_lines(result.output)
    assert "2 GPUs asked for" in line


@pytest.fixture(scope="module")
def no_train_clips(tmp_path_factory):
    """A prepared dataset with validation clips only: the worker (not the driver) finds nothing to train on."""
    return write_dataset(tmp_path_factory.mktemp("val-only"), learnable_examples(2, prefix="val"), ["val"] * 2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_worker_failure_becomes_one_training_error_line(ray_session, tiny_pretrained, no_train_clips, tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(TrainingError) as err:
        train_stage(cfg, no_train_clips, tiny_pretrained.root)
    message = str(err.value)
    assert message == f"run {cfg.run_name} failed: ValueError: no training clips in {no_train_clips} (worker 0)"

    result = _cli("train", "sovits", no_train_clips, "--pretrained", tiny_pretrained.root, "--run-name", "val-only",
                  "--storage", tmp_path / "runs", "--max-failures", "0")
    assert result.exit_code == 2, result.output
    [line] = _error_lines(result.output)
    assert line == f"error: run val-only failed: ValueError: no training clips in {no_train_clips} (worker 0)"

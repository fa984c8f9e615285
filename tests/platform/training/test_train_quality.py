"""Training that scores its checkpoints on an eval list (the real instruments) and keeps the best by a score."""

from __future__ import annotations

import csv
import json
import math
import uuid
from pathlib import Path

import pytest
import soundfile as sf

pytest.importorskip("resemblyzer", reason="the evaluation instruments are the voicefleet[eval] extra")

from tests.platform.training.synthetic import write_voice_dataset  # noqa: E402
from tests.platform.training.tensorboard_events import scalars  # noqa: E402
from voicefleet.models.checkpoint.sovits_io import load_sovits  # noqa: E402
from voicefleet.platform.data.synthetic import voice_like  # noqa: E402
from voicefleet.platform.evaluation import EvaluationError  # noqa: E402
from voicefleet.platform.training import api  # noqa: E402
from voicefleet.platform.training.api import choose_checkpoint, train_stage  # noqa: E402
from voicefleet.platform.training.config import TrainConfig  # noqa: E402

TEXTS = ("你好，今天天气很好。", "我们一起去公园散步吧。", "谢谢你的帮助！")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_voice_dataset(tmp_path_factory.mktemp("voice"), n_train=6, n_val=2)


@pytest.fixture(scope="module")
def eval_list(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    for i in range(len(TEXTS)):
        sf.write(root / f"clip{i}.wav", voice_like(2.0, 32000, seed=20 + i), 32000)
    path = root / "val.list"
    path.write_text("".join(f"clip{i}.wav|spk|zh|{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    return path


def _config(tmp_path, eval_list, **kw) -> TrainConfig:
    base = dict(stage="sovits", run_name=f"q-{uuid.uuid4().hex[:8]}", storage_path=str(tmp_path / "runs"),
                num_workers=1, batch_size=2, max_steps=6, eval_every=2, checkpoint_every=2, sovits_lr=1e-3,
                eval_list=str(eval_list), eval_lines=2, eval_metrics="similarity,dnsmos",
                keep_best_by="speaker_similarity")
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_checkpoints_are_scored_and_the_most_similar_is_exported(ray_session, dataset, eval_list, tiny_pretrained,
                                                                 tmp_path):
    cfg = _config(tmp_path, eval_list)
    result = train_stage(cfg, dataset, tiny_pretrained.root)
    out = Path(result.output_dir)

    # every checkpoint was scored with the real instruments, on the asked number of lines
    assert [s["step"] for s in result.scores] == [2, 4, 6]
    for s in result.scores:
        assert s["n"] == cfg.eval_lines and s["mode"] == "voice"
        assert -1.0 <= s["speaker_similarity"] <= 1.0 and 1.0 <= s["dnsmos_ovrl"] <= 5.0
        assert s["wer"] is None  # not asked for
        evaluation = json.loads((out / "quality" / f"step_{s['step']:07d}" / "eval.json").read_text())
        assert {**evaluation["summary"], "step": s["step"]} == s
        assert len(evaluation["utterances"]) == cfg.eval_lines and evaluation["config"]["step"] == s["step"]

    # the exported weights are those of the checkpoint with the highest similarity, and the report says so
    best = max(result.scores, key=lambda s: (s["speaker_similarity"], -s["step"]))
    assert result.best_step == best["step"] and result.keep_best_by == "speaker_similarity"
    assert load_sovits(result.exported).info.endswith(f"_{best['step']}iteration")
    assert "highest speaker_similarity" in result.selection
    report = (out / "report.md").read_text()
    assert f"step {best['step']}, kept by `speaker_similarity`" in report and "quality/step_0000002/report.md" in report

    # the scores sit beside the losses in metrics.csv, TensorBoard and the curves
    with open(out / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f)}
    for s in result.scores:
        assert float(rows[s["step"]]["eval_speaker_similarity"]) == pytest.approx(s["speaker_similarity"])
    tags = scalars(out / "tb")
    assert [step for step, _ in tags["eval/speaker_similarity"]] == [2, 4, 6]
    assert "val/recon" in tags and "eval/dnsmos_ovrl" in tags
    assert (out / "curves.png").stat().st_size > 10_000


def test_keep_best_by_picks_the_highest_score_and_falls_back_to_val_recon(tmp_path):
    cfg = TrainConfig(stage="sovits", run_name="x", eval_list="val.list", keep_best_by="dnsmos_ovrl")
    kept = [("a", {"step": 2, "val_recon": 1.0, "dnsmos_ovrl": 2.0, "eval_n": 4}),
            ("b", {"step": 4, "val_recon": 0.5, "dnsmos_ovrl": 2.5, "eval_n": 4}),
            ("c", {"step": 6, "val_recon": 0.4, "dnsmos_ovrl": math.nan})]
    rows = [m for _, m in kept]
    checkpoint, metrics, why = choose_checkpoint(cfg, kept, rows)
    assert checkpoint == "b" and "highest dnsmos_ovrl (2.5)" in why and "lowest val_recon was at step 6" in why
    checkpoint, _, why = choose_checkpoint(cfg.model_copy(update={"keep_best_by": "val_recon"}), kept, rows)
    assert checkpoint == "c" and why.startswith("lowest val_recon")
    unscored = [(c, {k: v for k, v in m.items() if k != "dnsmos_ovrl"}) for c, m in kept]
    checkpoint, _, why = choose_checkpoint(cfg, unscored, rows)
    assert checkpoint == "c" and "no kept checkpoint has a dnsmos_ovrl score" in why


def _cli(*args):
    from typer.testing import CliRunner

    from voicefleet.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr(api, "ensure_ray", refuse)


def test_bad_eval_input_fails_before_ray_starts(dataset, eval_list, tiny_pretrained, tmp_path, monkeypatch):
    _no_ray(monkeypatch)
    result = _cli("train", "sovits", dataset, "--pretrained", tiny_pretrained.root, "--run-name", "bad",
                  "--storage", tmp_path / "runs", "--keep-best-by", "speaker_similarity")
    assert result.exit_code == 2 and "needs an eval_list (--eval-list)" in result.output
    assert "Traceback" not in result.output
    result = _cli("train", "sovits", dataset, "--pretrained", tiny_pretrained.root, "--run-name", "bad",
                  "--storage", tmp_path / "runs", "--eval-list", tmp_path / "missing.list")
    assert result.exit_code == 2 and "eval list" in result.output and "missing.list" in result.output
    result = _cli("train", "sovits", dataset, "--pretrained", tiny_pretrained.root, "--run-name", "bad",
                  "--storage", tmp_path / "runs", "--eval-list", eval_list, "--keep-best-by", "dnsmos_ovrl",
                  "--eval-metrics", "similarity")
    assert result.exit_code == 2 and "needs the 'dnsmos' metric" in result.output

    with pytest.raises(FileNotFoundError, match="eval list .*nothing.list not found"):
        train_stage(_config(tmp_path, tmp_path / "nothing.list"), dataset, tiny_pretrained.root)
    broken_list = eval_list.parent / "broken.list"
    broken_list.write_text(eval_list.read_text().replace("clip1.wav", "gone.wav"), encoding="utf-8")
    with pytest.raises(EvaluationError, match="gone.wav"):
        train_stage(_config(tmp_path, broken_list, eval_lines=3), dataset, tiny_pretrained.root)
    with pytest.raises(EvaluationError, match="unknown metric"):
        train_stage(_config(tmp_path, eval_list, eval_metrics="similarity,loudness", keep_best_by="val_recon"),
                    dataset, tiny_pretrained.root)

"""Sweeps ranked by a voice-quality score (the real instruments), and every trial's TensorBoard files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.platform.training.synthetic import write_voice_dataset
from tests.platform.training.tensorboard_events import scalars
from voicefleet.tuning.config import SweepConfig
from voicefleet.tuning.space import Range, SearchSpace
from voicefleet.tuning.trial import tensorboard_scalars


def _space() -> SearchSpace:
    return SearchSpace(sovits_lr=Range(low=1e-5, high=1e-3, log=True), gpt_lr_ratio=Range(low=0.2, high=1.0),
                       warmup_fraction=Range(low=0.0, high=0.3), min_warmup_steps=0)


def test_the_metric_decides_the_direction_and_the_scores_it_needs():
    assert SweepConfig(voice="a").metric == "val_objective" and SweepConfig(voice="a").mode == "min"
    config = SweepConfig(voice="a", metric="speaker_similarity")
    assert config.mode == "max" and config.quality_metrics() == ["similarity"]
    assert SweepConfig(voice="a", metric="dnsmos_ovrl", eval_metrics="similarity,dnsmos").mode == "max"
    with pytest.raises(ValidationError, match="needs 'dnsmos' among eval_metrics"):
        SweepConfig(voice="a", metric="dnsmos_ovrl", eval_metrics="similarity")
    with pytest.raises(ValidationError, match="'wer' is not scored in sweeps"):
        SweepConfig(voice="a", eval_metrics="similarity,wer")


def test_trial_tensorboard_tags_match_training_and_leave_tunes_own_keys_out():
    tags = tensorboard_scalars({"train_sovits_mel": 3.0, "val_objective": 1.5, "val_recon": 0.7, "sovits_lr": 1e-4,
                                "speaker_similarity": 0.8, "dnsmos_ovrl": 2.5, "time_this_iter_s": 4.0,
                                "training_iteration": 2, "round": 2, "done": False, "val_ce": math.nan})
    assert tags == {"train/sovits_mel": 3.0, "val/objective": 1.5, "val/recon": 0.7, "sovits/lr": 1e-4,
                    "eval/speaker_similarity": 0.8, "eval/dnsmos_ovrl": 2.5}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_voice_dataset(tmp_path_factory.mktemp("voice"), n_train=6, n_val=2)


@pytest.mark.slow
def test_sweep_by_speaker_similarity_promotes_the_most_similar_trial(ray_session, dataset, tiny_pretrained, tmp_path):
    pytest.importorskip("resemblyzer", reason="the evaluation instruments are the voicefleet[eval] extra")
    from voicefleet.platform.voices import registry_for
    from voicefleet.tuning.sweep import run_sweep

    storage = tmp_path / "runs"
    config = SweepConfig(voice="alice", sweep_id="by-similarity", storage_path=str(storage), trials=2, rounds=2,
                         steps_per_round=2, batch_size=2, max_concurrent=1, space=_space(), objective_clips=2,
                         max_tokens=40, max_failures=0, grace_rounds=2, metric="speaker_similarity",
                         eval_metrics="similarity,dnsmos")  # grace: no trial is stopped, each has every round
    result = run_sweep(config, dataset, tiny_pretrained.root)

    assert result.metric == "speaker_similarity"
    scored = [t for t in result.trials if t["best_objective"] is not None]
    assert len(scored) == 2
    for t in scored:
        # the objective is the similarity of each round, a cosine; DNSMOS was measured beside it
        assert all(-1.0 <= v <= 1.0 for v in t["objectives"]) and len(t["objectives"]) == config.rounds
        assert t["best_objective"] == max(t["objectives"]) == t["best_metrics"]["speaker_similarity"]
        assert 1.0 <= t["best_metrics"]["dnsmos_ovrl"] <= 5.0 and "val_objective" in t["best_metrics"]
    best = max(scored, key=lambda t: t["best_objective"])  # higher is better
    assert result.best_trial == best["trial_id"] and result.best_objective == best["best_objective"]

    sweep_dir = Path(result.sweep_dir)
    with open(sweep_dir / "trials.csv") as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    assert rows[best["trial_id"]]["metric"] == "speaker_similarity"
    for t in scored:
        assert float(rows[t["trial_id"]]["best_objective"]) == pytest.approx(t["best_objective"], rel=1e-3)
        assert float(rows[t["trial_id"]]["dnsmos_ovrl"]) == pytest.approx(t["best_metrics"]["dnsmos_ovrl"], rel=1e-3)
        assert float(rows[t["trial_id"]]["val_objective"]) > 0
    report = (sweep_dir / "report.md").read_text()
    assert "objective `speaker_similarity`" in report and "dnsmos_ovrl" in report

    # promotion records the metric and the scores in the voice's lineage
    record = registry_for(str(storage)).get("alice")
    assert record.lineage["metric"] == "speaker_similarity" and record.lineage["trial"] == result.best_trial
    assert record.lineage["metrics"]["speaker_similarity"] == pytest.approx(result.best_objective)
    assert record.metrics["dnsmos_ovrl"] == pytest.approx(best["best_metrics"]["dnsmos_ovrl"])

    # every trial has TensorBoard files with each round's losses, rates and scores
    for t in scored:
        tags = scalars(sweep_dir / "trials" / t["trial_id"] / "tb")
        assert [step for step, _ in tags["eval/speaker_similarity"]] == [2, 4]
        assert {"train/sovits_mel", "train/gpt_ce", "val/objective", "val/recon", "sovits/lr", "gpt/lr",
                "eval/dnsmos_ovrl"} <= set(tags)

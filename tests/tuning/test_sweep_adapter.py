"""Adapter (LoRA) sweeps: the rank as a categorical dimension, the alpha rule, adapter trials that
train only their adapters, the report's rank columns, and a real sweep whose best trial becomes an
adapter voice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.platform.training.synthetic import write_voice_dataset
from voicefleet.models.adapter_config import read_adapter_metadata
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.data import load_examples
from voicefleet.tuning.config import AdapterPlan, SweepConfig
from voicefleet.tuning.finetune import VoiceFinetune, stage_configs
from voicefleet.tuning.report import TrialRow, write_report
from voicefleet.tuning.space import Choice, Range, SearchSpace


def _space(ranks: list[int] | None) -> SearchSpace:
    return SearchSpace(sovits_lr=Range(low=1e-5, high=1e-3, log=True), gpt_lr_ratio=Range(low=0.2, high=1.0),
                       warmup_fraction=Range(low=0.0, high=0.3), min_warmup_steps=0, lora_rank=ranks)


def test_the_rank_is_a_categorical_dimension_and_the_first_trial_takes_the_rank_nearest_the_default():
    from ray.tune.search.sample import Categorical

    from voicefleet.tuning.sweep import _official_point

    space = _space([4, 16])
    assert space.dimensions()["lora_rank"] == Choice(values=[4, 16])
    domain = space.tune_space()["lora_rank"]
    assert isinstance(domain, Categorical) and list(domain.categories) == [4, 16]
    assert _official_point(space)["lora_rank"] == 4  # |4 - 8| < |16 - 8|
    assert _official_point(_space([12, 4]))["lora_rank"] == 4  # a tie: the smaller
    assert "lora_rank" not in _official_point(_space(None))
    assert SearchSpace(lora_rank=[2, 32]).for_recipe("official").lora_rank == Choice(values=[2, 32])
    with pytest.raises(ValueError, match="repeat"):
        Choice(values=[4, 4])
    with pytest.raises(ValueError, match="rank must be 1-1024"):
        Choice(values=[0, 8])


def test_the_alpha_rule_sets_each_trials_alpha_and_each_stage_keeps_its_targets():
    base = TrainConfig(stage="sovits", run_name="unit", batch_size=2, epochs=100)
    fixed = SweepConfig(voice="a", adapter="lora", space=_space([4, 16]), lora_targets_gpt=["attn"]).adapter_plan()
    scaled = SweepConfig(voice="a", adapter="lora", space=_space([4, 16]), alpha_rule="scaled").adapter_plan()
    assert [fixed.alpha_of(r) for r in (4, 16)] == [16.0, 16.0]  # peft's lora_alpha: the same at every rank
    assert [scaled.alpha_of(r) for r in (4, 16)] == [8.0, 32.0]  # alpha / rank = 16 / 8 at every rank
    configs = stage_configs(base, {"sovits_lr": 2e-4, "lora_rank": 16}, 10, 0, scaled)
    for stage in ("sovits", "gpt"):
        spec = configs[stage].adapter_spec()
        assert spec is not None and (spec.rank, spec.alpha, spec.scaling) == (16, 32.0, 2.0)
    assert configs["sovits"].adapter_spec().targets == ("text_encoder", "flow")
    assert stage_configs(base, {"lora_rank": 4}, 10, 0, fixed)["gpt"].adapter_spec().targets == ("attn",)
    # a sweep without --ranks trains every trial at its one rank
    one = SweepConfig(voice="a", adapter="lora", lora_rank=2, space=_space(None)).adapter_plan()
    assert stage_configs(base, {}, 10, 0, one)["gpt"].lora_rank == 2
    assert stage_configs(base, {}, 10, 0, None)["gpt"].adapter_spec() is None  # full fine-tuning


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_voice_dataset(tmp_path_factory.mktemp("voice"), n_train=6, n_val=2)


def test_an_adapter_trial_trains_only_its_adapters_and_is_scored_with_them(dataset, tiny_pretrained):
    plan = AdapterPlan(rank=4, alpha=16.0, alpha_rule="fixed", targets={"sovits": None, "gpt": None})
    base = TrainConfig(stage="sovits", run_name="unit", batch_size=2, epochs=100)
    configs = stage_configs(base, {"sovits_lr": 1e-3, "warmup_fraction": 0.0}, 4, 0, plan)
    files = {"gpt": str(tiny_pretrained.gpt), "sovits_g": str(tiny_pretrained.sovits_g),
             "sovits_d": str(tiny_pretrained.sovits_d)}
    torch.manual_seed(0)
    ft = VoiceFinetune(configs, files, load_examples(dataset, "train"), load_examples(dataset, "val"),
                       device=torch.device("cpu"), objective_clips=1)
    gpt = ft.stages["gpt"].models["gpt"]
    before = {k: v.clone() for k, v in gpt.state_dict().items() if ".lora." not in k and not k.startswith("lora.")}
    start = ft.evaluate(max_tokens=20)
    ft.train("sovits", 2)
    ft.train("gpt", 2)
    after = gpt.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the backbone stays as loaded
    assert any(layer.lora_B.abs().sum() > 0 for _, layer in ft.stages["gpt"].stage.adapter.items())
    trained = ft.evaluate(max_tokens=20)
    # the teacher-forced losses see the trained adapters (they start as the identity: B = 0)
    assert trained["val_ce"] != start["val_ce"] and trained["val_recon"] != start["val_recon"]


def test_the_report_lists_every_trials_rank_and_alpha(tmp_path):
    config = SweepConfig(voice="a", adapter="lora", space=_space([4, 16]), alpha_rule="scaled")
    rows = [TrialRow(trial_id=f"t{i}", index=i, status="finished", rounds=2, objectives=[obj + 0.1, obj],
                     best_objective=obj, best_round=2,
                     params={"sovits_lr": lr, "gpt_lr_ratio": 0.5, "warmup_fraction": 0.1, "lora_rank": rank})
             for i, (lr, rank, obj) in enumerate([(1e-4, 4, 1.2), (3e-4, 16, 1.0), (5e-5, 4, 1.4), (2e-4, 16, 1.1)], 1)]
    write_report(config, rows, tmp_path, best=rows[1])
    table = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [(r["lora_rank"], r["lora_alpha"]) for r in table] == [("4", "8"), ("16", "32"), ("4", "8"), ("16", "32")]
    report = (tmp_path / "report.md").read_text()
    assert "rank searched among 4,16" in report and "lora_rank=16" in report and "lora_alpha=32" in report
    assert "lora_rank" in json.loads((tmp_path / "importances.json").read_text())  # fANOVA over the category


@pytest.mark.slow
def test_an_adapter_sweep_over_two_ranks_registers_the_best_as_an_adapter_voice(ray_session, dataset,
                                                                                 tiny_pretrained, tmp_path):
    from voicefleet.inference.adapted import Backbone, load_adapter_voice
    from voicefleet.inference.pipeline import SynthesisParams, Synthesizer
    from voicefleet.platform.voices import registry_for
    from voicefleet.tuning.sweep import run_sweep

    storage = tmp_path / "runs"
    config = SweepConfig(voice="bob", sweep_id="lora-ranks", storage_path=str(storage), trials=2, rounds=2,
                         steps_per_round=2, batch_size=2, max_concurrent=2, space=_space([2, 4]), objective_clips=1,
                         max_tokens=30, max_failures=0, grace_rounds=2, adapter="lora")  # grace: both run every round
    # the first trial: official rates at the rank nearest the default (4); the second at rank 2
    result = run_sweep(config, dataset, tiny_pretrained.root,
                       points_to_evaluate=[{"sovits_lr": 5e-4, "gpt_lr_ratio": 0.5, "warmup_fraction": 0.1,
                                            "lora_rank": 2}])
    ranks = {t["trial_id"]: t["params"]["lora_rank"] for t in result.trials}
    assert sorted(ranks.values()) == [2, 4] and all(t["status"] == "finished" for t in result.trials)
    table = {r["trial_id"]: r for r in csv.DictReader((Path(result.sweep_dir) / "trials.csv").open())}
    assert {t: int(r["lora_rank"]) for t, r in table.items()} == ranks
    assert {r["lora_alpha"] for r in table.values()} == {"16"}  # alpha rule fixed: the default alpha everywhere

    best_rank = ranks[result.best_trial]
    registry = registry_for(str(storage))
    record = registry.get("bob")
    assert record.is_adapter and {s: a["rank"] for s, a in record.adapters.items()} == {"gpt": best_rank,
                                                                                        "sovits": best_rank}
    assert record.lineage["trial"] == result.best_trial and record.lineage["adapter"]["rank"] == best_rank
    files = registry.local_files("bob")
    assert all(read_adapter_metadata(files[stage])["rank"] == str(best_rank) for stage in ("gpt", "sovits"))
    # a synthesis replica's path: the pretrained backbone and the voice's adapter files
    synth = Synthesizer.from_pretrained(tiny_pretrained)
    voice = load_adapter_voice(synth, Backbone.load(tiny_pretrained), "bob", gpt=files["gpt"], sovits=files["sovits"],
                               reference=files["reference"], prompt_text=record.prompt_text,
                               prompt_lang=record.prompt_lang)
    assert len(voice.adapters) == 2
    audio = synth.synthesize_units(voice, synth.phoneme_units([[100, 101, 102, 103]], voice),
                                   SynthesisParams(max_tokens=20, seed=0))
    assert len(audio) > 0 and bool(torch.isfinite(torch.as_tensor(audio)).all())

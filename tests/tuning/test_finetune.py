"""Both stages fine-tuned in rounds (the sweep's trial body), without Ray."""

from __future__ import annotations

import math

import pytest
import torch

from tests.platform.training.synthetic import write_voice_dataset
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.data import load_examples
from voicefleet.tuning.finetune import VoiceFinetune, held_out_set, stage_configs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_voice_dataset(tmp_path_factory.mktemp("voice"), n_train=6, n_val=2)


def _base(**kw) -> TrainConfig:
    return TrainConfig(stage="sovits", run_name="unit", batch_size=2, epochs=100, **kw)


def _finetune(dataset, pretrained, params, total=4) -> VoiceFinetune:
    configs = stage_configs(_base(), params, total, min_warmup_steps=0)
    files = {"gpt": str(pretrained.gpt), "sovits_g": str(pretrained.sovits_g), "sovits_d": str(pretrained.sovits_d)}
    return VoiceFinetune(configs, files, load_examples(dataset, "train"), load_examples(dataset, "val"),
                         device=torch.device("cpu"), objective_clips=2)


def test_stage_configs_carry_the_sampled_values():
    configs = stage_configs(_base(), {"sovits_lr": 3e-4, "gpt_lr_ratio": 0.5, "warmup_fraction": 0.25,
                                      "t0_fraction": 0.5, "text_low_lr_rate": 0.3}, total_steps=40,
                            min_warmup_steps=4)
    sovits, gpt = configs["sovits"], configs["gpt"]
    assert sovits.stage == "sovits" and gpt.stage == "gpt" and sovits.max_steps == gpt.max_steps == 40
    assert sovits.lr == pytest.approx(3e-4) and gpt.lr == pytest.approx(1.5e-4)
    assert sovits.text_low_lr_rate == 0.3
    assert sovits.schedule.warmup_steps(40) == 10 and sovits.schedule.t0 == 15  # half of the 30 after warm-up
    short = stage_configs(_base(), {"warmup_fraction": 0.01}, total_steps=40, min_warmup_steps=4)["gpt"]
    assert short.schedule.warmup_steps(40) == 4  # never below the minimum
    with pytest.raises(ValueError):
        stage_configs(_base(), {"gpt_lr_ratio": 20.0}, total_steps=40, min_warmup_steps=0)


def test_held_out_set_prefers_validation_clips(dataset):
    train, val = load_examples(dataset, "train"), load_examples(dataset, "val")
    held = held_out_set(train, val, max_clips=2)
    assert held.reference in train and [c.clip_id for c in held.clips] == [c.clip_id for c in val[:2]]
    only_train = held_out_set(train, [], max_clips=2)
    assert only_train.reference not in only_train.clips and len(only_train.clips) == 2


def test_objective_changes_when_only_the_gpt_learning_rate_changes(dataset, tiny_pretrained):
    results = []
    for ratio in (0.2, 1.0):
        torch.manual_seed(0)
        ft = _finetune(dataset, tiny_pretrained, {"sovits_lr": 1e-3, "gpt_lr_ratio": ratio, "warmup_fraction": 0.0})
        torch.manual_seed(0)
        ft.train("sovits", 2)
        ft.train("gpt", 4)
        results.append((ft.evaluate(max_tokens=40), ft.learning_rate("gpt")))
    (low, low_lr), (high, high_lr) = results
    assert high_lr == pytest.approx(5 * low_lr)
    # the acoustic stage is the same in both runs; only the GPT (and so the full path) differs
    assert low["val_recon"] == pytest.approx(high["val_recon"], abs=1e-6)
    assert low["val_ce"] != pytest.approx(high["val_ce"], abs=1e-6)
    assert math.isfinite(low["val_objective"]) and math.isfinite(high["val_objective"])
    assert low["val_objective"] != pytest.approx(high["val_objective"], abs=1e-6)


def test_state_round_trip_resumes_exactly(dataset, tiny_pretrained):
    params = {"sovits_lr": 5e-4, "gpt_lr_ratio": 0.5, "warmup_fraction": 0.1}
    torch.manual_seed(1)
    a = _finetune(dataset, tiny_pretrained, params)
    a.train("sovits", 1)
    a.train("gpt", 2)
    state = a.state_dict()
    b = _finetune(dataset, tiny_pretrained, params)
    b.load_state_dict(state)
    assert b.steps("sovits") == 1 and b.steps("gpt") == 2
    assert b.learning_rate("gpt") == a.learning_rate("gpt")
    assert b.evaluate(max_tokens=30) == a.evaluate(max_tokens=30)


def _seeded(dataset, pretrained, seed: int, recipe: str = "voicefleet", batch_size: int = 2) -> VoiceFinetune:
    base = _base(seed=seed, recipe=recipe).model_copy(update={"batch_size": batch_size})
    configs = stage_configs(base, {"sovits_lr": 5e-4}, 4, min_warmup_steps=0)
    files = {"gpt": str(pretrained.gpt), "sovits_g": str(pretrained.sovits_g), "sovits_d": str(pretrained.sovits_d)}
    ft = VoiceFinetune(configs, files, load_examples(dataset, "train"), load_examples(dataset, "val"),
                       device=torch.device("cpu"), objective_clips=1)
    ft.metrics = {**ft.train("sovits", 2), **ft.train("gpt", 2)}
    return ft


def _weights(ft: VoiceFinetune) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v for m, state in ft.state_dict()["models"].items() for k, v in state.items()}


def test_the_same_seed_repeats_a_run_and_another_seed_does_not(dataset, tiny_pretrained):
    torch.manual_seed(123)  # whatever the process drew before: the seed decides
    a = _seeded(dataset, tiny_pretrained, seed=7)
    torch.manual_seed(456)
    b = _seeded(dataset, tiny_pretrained, seed=7)
    c = _seeded(dataset, tiny_pretrained, seed=8)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert a.metrics == b.metrics
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics != c.metrics
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_official_recipe_trains_both_stages_with_the_official_optimizers(dataset, tiny_pretrained):
    from voicefleet.platform.training.optim import ScaledAdam

    with pytest.raises(ValueError, match="fewer than accumulate=4"):  # 6 clips in 3 batches: never a GPT step
        _seeded(dataset, tiny_pretrained, seed=0, recipe="official")
    ft = _seeded(dataset, tiny_pretrained, seed=0, recipe="official", batch_size=1)
    sovits, gpt = ft.configs["sovits"], ft.configs["gpt"]
    assert sovits.grad_clip is None and gpt.grad_clip is None
    assert sovits.accumulate == 1 and gpt.accumulate == 4  # the official GPT steps every 4 micro-batches
    assert isinstance(ft.stages["gpt"].stage.optim, ScaledAdam)
    assert ft.learning_rate("gpt") == pytest.approx(gpt.official.gpt_lr)  # after the first step: the pinned rate
    assert ft.learning_rate("sovits") == pytest.approx(sovits.sovits_lr * sovits.official.lr_decay)  # epoch 0
    assert all(math.isfinite(v) for v in ft.metrics.values())

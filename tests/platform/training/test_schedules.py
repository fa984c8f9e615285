"""Learning-rate schedules: warm-up, cosine restarts, and the official recipe's rates as its code sets them."""

import math

import pytest
import torch

from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.scheduler import StepSchedule
from voicefleet.platform.training.schedules import (OfficialSchedule, ScheduleConfig, cosine_restarts, learning_rate,
                                                    official_learning_rate)


def test_warmup_rises_linearly_to_the_base_rate():
    cfg = ScheduleConfig(warmup_fraction=0.1, min_warmup_steps=5, warmup_start=0.01)
    lrs = [learning_rate(s, 1e-4, 200, cfg) for s in range(21)]
    assert lrs[0] == pytest.approx(1e-6)
    assert all(b > a for a, b in zip(lrs[:20], lrs[1:20]))
    assert lrs[20] == pytest.approx(1e-4)  # warm-up is 10% of 200 steps


def test_minimum_warmup_length_applies_to_short_runs():
    cfg = ScheduleConfig(warmup_fraction=0.05, min_warmup_steps=10)
    assert cfg.warmup_steps(40) == 10
    assert cfg.warmup_steps(1000) == 50
    assert cfg.warmup_steps(5) == 5  # never longer than the run


def test_cosine_restarts_cycles_double():
    # cycles of 10, 20, 40 steps
    assert cosine_restarts(0, 10, 2) == 0
    assert cosine_restarts(9, 10, 2) == pytest.approx(0.9)
    assert cosine_restarts(10, 10, 2) == 0
    assert cosine_restarts(29, 10, 2) == pytest.approx(19 / 20)
    assert cosine_restarts(30, 10, 2) == 0
    assert cosine_restarts(25, 10, 1) == pytest.approx(0.5)


def test_after_warmup_the_rate_anneals_to_eta_min_and_restarts():
    cfg = ScheduleConfig(warmup_fraction=0.0, min_warmup_steps=0, t0=10, t_mult=2, eta_min=1e-6)
    lrs = [learning_rate(s, 1e-4, 100, cfg) for s in range(31)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + math.cos(math.pi * 0.5)))
    assert lrs[9] < 5e-6 and lrs[10] == pytest.approx(1e-4)  # restart
    assert lrs[30] == pytest.approx(1e-4)


def test_official_sovits_rate_decays_per_epoch_from_one_step_in():
    # s2_train.py steps its ExponentialLR once before the first epoch, then after every epoch
    cfg = OfficialSchedule()
    assert official_learning_rate(0, 1e-4, cfg, stage="sovits", steps_per_epoch=10) == pytest.approx(1e-4 * 0.999875)
    assert official_learning_rate(9, 1e-4, cfg, stage="sovits", steps_per_epoch=10) == pytest.approx(1e-4 * 0.999875)
    assert official_learning_rate(25, 1e-4, cfg, stage="sovits", steps_per_epoch=10) == pytest.approx(
        1e-4 * 0.999875 ** 3)


def test_official_gpt_rate_is_the_constructor_rate_then_the_pinned_one():
    # WarmupCosineLRSchedule.step() overwrites its warm-up/cosine value with 0.002 on every call
    cfg = OfficialSchedule()
    rates = [official_learning_rate(s, 123.0, cfg, stage="gpt") for s in (0, 1, 2, 1999, 2000, 40_001)]
    assert rates == [0.01, 0.002, 0.002, 0.002, 0.002, 0.002]


def test_step_schedule_follows_the_recipe():
    model = torch.nn.Linear(2, 2)
    for recipe, expected in (("official", [0.01, 0.002, 0.002]), ("voicefleet", None)):
        cfg = TrainConfig(stage="gpt", run_name="x", recipe=recipe)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        sched = StepSchedule(opt, cfg, 100, steps_per_epoch=10)
        seen = []
        for _ in range(3):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert seen == pytest.approx(expected or [cfg.rate(s, 100, 10) for s in range(3)])


def test_retired_schedule_kind_names_the_recipe():
    with pytest.raises(ValueError, match="recipe: official"):
        ScheduleConfig(kind="official")


def test_step_schedule_keeps_group_ratios():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-4}, {"params": [model.bias], "lr": 0.4e-4}])
    cfg = TrainConfig(stage="sovits", run_name="x", sovits_lr=1e-4,
                      schedule=ScheduleConfig(warmup_fraction=0.1, min_warmup_steps=1))
    sched = StepSchedule(opt, cfg, 100)
    for _ in range(10):
        opt.step()
        sched.step()
    lr0, lr1 = (g["lr"] for g in opt.param_groups)
    assert lr0 == pytest.approx(1e-4) and lr1 == pytest.approx(0.4e-4)


def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError):
        ScheduleConfig(warmup_frac=0.1)

"""Learning-rate schedules for fine-tuning, as step-indexed rates (no torch here: the command line
reads these defaults).

The `voicefleet` recipe (`ScheduleConfig`): linear warm-up from `warmup_start` x base to the base
rate over `warmup_steps`, then cosine annealing with warm restarts (SGDR): the first cycle lasts
`t0` steps, each next one `t_mult` times longer, and the rate falls to `eta_min` at the end of each.

The `official` recipe (`OfficialSchedule`) does what GPT-SoVITS v2's training code does, which is
not always what its configs say:

- SoVITS (s2_train.py): `ExponentialLR(gamma=lr_decay)` stepped once per epoch, and once more
  before the first epoch (`for _ in range(epoch_str): scheduler.step()` with `epoch_str = 1` on
  a fresh run), so epoch e (counting from 0) trains at base x lr_decay^(e + 1).
- GPT (s1_train.py): `WarmupCosineLRSchedule` is built with the s1longer-v2.yaml values (1e-5 up
  to 0.01 over 2000 steps, cosine down to 1e-4 at 40000), but its `step()` computes that rate and
  then overwrites it with a constant 0.002 on every call. Lightning's manual optimisation never
  steps the scheduler before the first optimizer step, so that first step runs at ScaledAdam's
  constructor rate (0.01) and every later one at 0.002. We reproduce that behaviour, not the
  warm-up/cosine curve the yaml describes.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Recipe = Literal["official", "voicefleet"]


class ScheduleConfig(BaseModel):
    """How the learning rate moves during a run of the `voicefleet` recipe."""

    model_config = ConfigDict(extra="forbid")

    warmup_fraction: float = Field(0.08, ge=0.0, le=0.5, description="Warm-up length as a fraction of all steps.")
    min_warmup_steps: int = Field(10, ge=0, description="Warm-up lasts at least this many steps.")
    warmup_start: float = Field(0.01, gt=0.0, le=1.0, description="Rate at step 0, as a fraction of the base rate.")
    t0: int | None = Field(None, ge=1, description="First cosine cycle in steps; default: all steps after warm-up.")
    t_mult: int = Field(2, ge=1, description="Each cosine cycle is this many times longer than the last.")
    eta_min: float = Field(1e-6, ge=0.0, description="Rate at the end of each cosine cycle (absolute).")

    @model_validator(mode="before")
    @classmethod
    def _retired_kind(cls, data):
        # `kind: official` chose GPT-SoVITS's schedules alone; the recipe now chooses schedules,
        # optimizers, clipping and loss reduction together
        if isinstance(data, dict) and ("kind" in data or "gamma" in data):
            raise ValueError("schedule.kind and schedule.gamma were retired: set `recipe: official` (--recipe "
                             "official) for GPT-SoVITS's optimizers and schedules, `recipe: voicefleet` for ours")
        return data

    def warmup_steps(self, total_steps: int) -> int:
        return min(total_steps, max(self.min_warmup_steps, round(self.warmup_fraction * total_steps)))


class OfficialSchedule(BaseModel):
    """The rates of the `official` recipe (values from GPT-SoVITS's s2.json and s1 training code)."""

    model_config = ConfigDict(extra="forbid")

    lr_decay: float = Field(0.999875, gt=0.0, le=1.0, description="SoVITS: ExponentialLR decay per epoch (s2.json).")
    gpt_first_lr: float = Field(0.01, gt=0.0, le=1.0, description="GPT: rate of the first optimizer step "
                                "(ScaledAdam's constructor rate; the scheduler has not stepped yet).")
    gpt_lr: float = Field(0.002, gt=0.0, le=1.0, description="GPT: rate of every later step (the constant the "
                          "official scheduler pins, whatever the yaml's warm-up/cosine values).")


def cosine_restarts(step: int, t0: int, t_mult: int) -> float:
    """Position in the current SGDR cycle, in [0, 1), for `step` steps after warm-up."""
    if t_mult == 1:
        return (step % t0) / t0
    start, length = 0, t0
    while step >= start + length:  # at most log_{t_mult}(steps) iterations
        start += length
        length *= t_mult
    return (step - start) / length


def learning_rate(step: int, base_lr: float, total_steps: int, cfg: ScheduleConfig) -> float:
    """The `voicefleet` rate at optimizer step `step` (0-based)."""
    warmup = cfg.warmup_steps(total_steps)
    if step < warmup:
        return base_lr * (cfg.warmup_start + (1 - cfg.warmup_start) * step / warmup)
    after = step - warmup
    t0 = cfg.t0 or max(1, total_steps - warmup)
    phase = cosine_restarts(after, t0, cfg.t_mult)
    eta_min = min(cfg.eta_min, base_lr)
    return eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * phase))


def official_learning_rate(step: int, base_lr: float, cfg: OfficialSchedule, *, stage: Literal["sovits", "gpt"],
                           steps_per_epoch: int = 1) -> float:
    """The `official` rate at optimizer step `step` (0-based); see the module docstring.
    SoVITS: `base_lr` x lr_decay^(epoch + 1); GPT: `gpt_first_lr` then `gpt_lr` (`base_lr` unused)."""
    if stage == "gpt":
        return cfg.gpt_first_lr if step == 0 else cfg.gpt_lr
    return base_lr * cfg.lr_decay ** (step // max(1, steps_per_epoch) + 1)

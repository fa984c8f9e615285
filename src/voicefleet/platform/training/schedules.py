"""Learning-rate schedules for fine-tuning, as step-indexed multipliers of a base rate.

`warmup_cosine` (default): linear warm-up from `warmup_start` x base to the base rate over
`warmup_steps`, then cosine annealing with warm restarts (SGDR): the first cycle lasts `t0`
steps, each next one `t_mult` times longer, and the rate falls to `eta_min` at the end of each.

`official` reproduces GPT-SoVITS: SoVITS decays exponentially, x `gamma` (0.999875) once per
epoch; the GPT's official scheduler pins every step to its end rate, i.e. a fixed rate.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ScheduleConfig(BaseModel):
    """How the learning rate moves during a run."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["warmup_cosine", "official"] = Field(
        "warmup_cosine", description="warmup_cosine, or official (GPT-SoVITS's: SoVITS x gamma per epoch, GPT fixed).")
    warmup_fraction: float = Field(0.08, ge=0.0, le=0.5, description="Warm-up length as a fraction of all steps.")
    min_warmup_steps: int = Field(10, ge=0, description="Warm-up lasts at least this many steps.")
    warmup_start: float = Field(0.01, gt=0.0, le=1.0, description="Rate at step 0, as a fraction of the base rate.")
    t0: int | None = Field(None, ge=1, description="First cosine cycle in steps; default: all steps after warm-up.")
    t_mult: int = Field(2, ge=1, description="Each cosine cycle is this many times longer than the last.")
    eta_min: float = Field(1e-6, ge=0.0, description="Rate at the end of each cosine cycle (absolute).")
    gamma: float = Field(0.999875, gt=0.0, le=1.0, description="official SoVITS: decay per epoch.")

    def warmup_steps(self, total_steps: int) -> int:
        return min(total_steps, max(self.min_warmup_steps, round(self.warmup_fraction * total_steps)))


def cosine_restarts(step: int, t0: int, t_mult: int) -> float:
    """Position in the current SGDR cycle, in [0, 1), for `step` steps after warm-up."""
    if t_mult == 1:
        return (step % t0) / t0
    start, length = 0, t0
    while step >= start + length:  # at most log_{t_mult}(steps) iterations
        start += length
        length *= t_mult
    return (step - start) / length


def learning_rate(step: int, base_lr: float, total_steps: int, cfg: ScheduleConfig, *,
                  steps_per_epoch: int = 1, stage: Literal["sovits", "gpt"] = "sovits") -> float:
    """The rate at optimizer step `step` (0-based)."""
    if cfg.kind == "official":
        if stage == "gpt":
            return base_lr
        return base_lr * cfg.gamma ** (step // max(1, steps_per_epoch))
    warmup = cfg.warmup_steps(total_steps)
    if step < warmup:
        return base_lr * (cfg.warmup_start + (1 - cfg.warmup_start) * step / warmup)
    after = step - warmup
    t0 = cfg.t0 or max(1, total_steps - warmup)
    phase = cosine_restarts(after, t0, cfg.t_mult)
    eta_min = min(cfg.eta_min, base_lr)
    return eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * phase))

"""`StepSchedule`: the learning-rate schedule of `schedules` as a torch scheduler, stepped per
optimizer step (kept apart so that reading `ScheduleConfig` does not import torch)."""

from __future__ import annotations

from typing import Literal

import torch

from voicefleet.platform.training.schedules import ScheduleConfig, learning_rate


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """A `LambdaLR` over `learning_rate`: every param group keeps its own ratio to the base rate
    (e.g. SoVITS text modules at `text_low_lr_rate` x base)."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int, cfg: ScheduleConfig, *,
                 steps_per_epoch: int = 1, stage: Literal["sovits", "gpt"] = "sovits", last_epoch: int = -1):
        self.cfg, self.base_lr_value, self.total_steps = cfg, base_lr, total_steps

        def factor(step: int) -> float:
            return learning_rate(step, base_lr, total_steps, cfg, steps_per_epoch=steps_per_epoch, stage=stage) / base_lr

        super().__init__(optimizer, factor, last_epoch=last_epoch)

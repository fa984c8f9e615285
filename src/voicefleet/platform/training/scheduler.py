"""`StepSchedule`: a run's learning-rate schedule (`TrainConfig.rate`, either recipe) as a torch
scheduler, stepped per optimizer step (kept apart so that reading the configs does not import torch)."""

from __future__ import annotations

import torch

from voicefleet.platform.training.config import TrainConfig


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """A `LambdaLR` over `TrainConfig.rate`: every param group keeps its own ratio to the base rate
    (e.g. SoVITS text modules at `text_low_lr_rate` x base), as the official ExponentialLR does."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, *,
                 steps_per_epoch: int = 1, last_epoch: int = -1):
        self.cfg, self.total_steps = cfg, total_steps
        base = cfg.lr

        def factor(step: int) -> float:
            return cfg.rate(step, total_steps, steps_per_epoch) / base

        super().__init__(optimizer, factor, last_epoch=last_epoch)

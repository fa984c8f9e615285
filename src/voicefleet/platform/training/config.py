"""Run configuration for fine-tuning a voice (both stages), with the official values as defaults."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicefleet.platform.training.monitor import MonitorConfig
from voicefleet.platform.training.schedules import ScheduleConfig

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class TrainConfig(BaseModel):
    """One Ray Train run of one stage. `run_name` identifies the run: re-running the same name in
    the same storage resumes it; a new name starts fresh."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["sovits", "gpt"]
    run_name: str
    storage_path: str = Field("runs", description="Local folder or any URI Ray's storage_path accepts.")
    num_workers: int = Field(1, ge=1, le=1024)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How Ray places the workers' bundles: PACK fills few nodes (Ray's default); "
                            "STRICT_SPREAD puts every worker on its own node (fails if there are fewer nodes).")
    batch_size: int = Field(4, ge=1, le=1024, description="Clips per worker per step.")
    epochs: int = Field(8, ge=1, le=10_000, description="Official: 8 for SoVITS, 15 for GPT.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    sovits_lr: float = Field(1e-4, gt=0, le=1, description="SoVITS base learning rate (official 1e-4).")
    gpt_lr_ratio: float = Field(0.4, gt=0, le=10, description="GPT learning rate = ratio x SoVITS base rate.")
    text_low_lr_rate: float = Field(0.4, gt=0, le=1, description="SoVITS text-side modules' share of the base rate.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; None disables clipping.")
    accumulate: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 with a GradScaler on GPU; fp32 on CPU.")
    eval_every: int = Field(20, ge=1, description="Optimizer steps between validation passes.")
    checkpoint_every: int = Field(20, ge=1, description="Optimizer steps between checkpoints.")
    keep_checkpoints: int = Field(3, ge=1)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    max_failures: int = Field(2, ge=-1, description="Worker-group restarts from the last checkpoint (-1: no limit).")
    seed: int = 1234

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        if not RUN_NAME.match(v):
            raise ValueError(f"run name {v!r} must be 1-128 characters of letters, digits, '_', '.' and '-'")
        return v

    @model_validator(mode="after")
    def _intervals(self) -> "TrainConfig":
        if self.checkpoint_every % self.eval_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every "
                             f"({self.eval_every}): checkpoints are written at evaluations")
        return self

    @property
    def lr(self) -> float:
        """This stage's base learning rate."""
        return self.sovits_lr if self.stage == "sovits" else self.sovits_lr * self.gpt_lr_ratio

    def resolved_precision(self, device_type: str, bf16_ok: bool) -> str:
        if self.precision != "auto":
            return self.precision
        if device_type != "cuda":
            return "fp32"
        return "bf16" if bf16_ok else "fp16"

"""Run configuration for fine-tuning a voice (both stages), with the official values as defaults."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicefleet.platform.training.monitor import MonitorConfig
from voicefleet.platform.training.schedules import ScheduleConfig

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
Stage = Literal["sovits", "gpt"]
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]  # Ray placement group strategies
STAGE_EPOCHS: dict[str, int] = {"sovits": 8, "gpt": 15}  # the official fine-tuning epoch counts


class TrainConfig(BaseModel):
    """One Ray Train run of one stage. `run_name` identifies the run: re-running the same name in
    the same storage resumes it; a new name starts fresh."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    run_name: str = Field(description="Unique run name; the same name in the same storage resumes the run.")
    storage_path: str = Field("runs", description="Runs and registry: a local folder or any URI Ray's "
                                                  "storage_path accepts (s3://, gs://, ...).")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker (nccl); CPU workers use gloo.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker.")
    placement_strategy: Placement = Field(
        "PACK", description="How Ray places the workers' bundles: PACK fills few nodes (Ray's default); "
                            "STRICT_SPREAD puts every worker on its own node (fails if there are fewer nodes).")
    batch_size: int = Field(4, ge=1, le=1024, description="Clips per worker per step.")
    # absent: the stage's official count (STAGE_EPOCHS), filled in by `_stage_epochs`
    epochs: int = Field(STAGE_EPOCHS["sovits"], ge=1, le=10_000,
                        description="Passes over the dataset (official: 8 for SoVITS, 15 for GPT).")
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
    checkpoint_every: int = Field(20, ge=1,
                                  description="Optimizer steps between checkpoints (a multiple of eval_every).")
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept, best by val_recon.")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    max_failures: int = Field(2, ge=-1, description="Worker-group restarts from the last checkpoint (-1: no limit).")
    seed: int = Field(1234, description="Seeds every worker (seed + rank).")

    @model_validator(mode="before")
    @classmethod
    def _stage_epochs(cls, data):
        if isinstance(data, dict) and data.get("epochs") is None and data.get("stage") in STAGE_EPOCHS:
            data = {**data, "epochs": STAGE_EPOCHS[data["stage"]]}
        return data

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

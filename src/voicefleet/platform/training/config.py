"""Run configuration for fine-tuning a voice (both stages), with the official values as defaults.

`recipe` picks how a stage is optimised; every setting it implies is spelled out by
`TrainConfig.settings()`, which each run records in its checkpoints and `report.json`:

- `official`: GPT-SoVITS v2 fine-tuning as its code does it. SoVITS: AdamW, ExponentialLR per
  epoch, no clipping (the norm is only logged), fp16 + GradScaler on GPU. GPT: ScaledAdam with its
  own update clipping, the official rates (`schedules.OfficialSchedule`), summed cross-entropy,
  gradients summed over 4 micro-batches per step, fp16 on GPU.
- `voicefleet`: warm-up + cosine restarts, gradient clipping at 1.0, the GPT on AdamW at
  `gpt_lr_ratio` x the SoVITS rate with a per-target mean cross-entropy, bf16 where supported.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicefleet.models.adapter_config import (DEFAULT_ALPHA, DEFAULT_RANK, DEFAULT_TARGETS, MAX_RANK, AdapterError,
                                              AdapterSpec)
from voicefleet.platform.training.monitor import MonitorConfig
from voicefleet.platform.training.schedules import (OfficialSchedule, Recipe, ScheduleConfig, learning_rate,
                                                    official_learning_rate)

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
Stage = Literal["sovits", "gpt"]
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]  # Ray placement group strategies
AdapterKind = Literal["none", "lora"]
STAGE_EPOCHS: dict[str, int] = {"sovits": 8, "gpt": 15}  # the official fine-tuning epoch counts
# t2s_lightning_module.training_step steps when `batch_idx % 4 == 0`: 4 micro-batches per GPT step
OFFICIAL_GPT_ACCUMULATE = 4
# configure_optimizers: ScaledAdam(betas=(0.9, 0.95), clipping_scale=2.0, clipping_update_period=1000),
# the other arguments at their defaults
OFFICIAL_SCALED_ADAM = {"betas": (0.9, 0.95), "clipping_scale": 2.0, "clipping_update_period": 1000,
                        "scalar_lr_scale": 0.1, "eps": 1e-8, "param_min_rms": 1e-5, "param_max_rms": 3.0,
                        "scalar_max": 10.0, "size_update_period": 4}
# s2_train.py: AdamW(betas, eps from s2.json; torch's default weight decay 0.01), for G and D
SOVITS_ADAMW = {"betas": (0.8, 0.99), "eps": 1e-9, "weight_decay": 0.01}
GPT_ADAMW = {"betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.01}  # the voicefleet recipe's GPT optimizer
# Voice-quality scores a run can keep its best checkpoint by (higher is better), each with the
# evaluation metric (`voicefleet.platform.evaluation.metrics.METRICS`) that measures it.
QUALITY_METRICS: dict[str, str] = {"speaker_similarity": "similarity", "dnsmos_ovrl": "dnsmos"}
KeepBestBy = Literal["val_recon", "speaker_similarity", "dnsmos_ovrl"]


class TrainConfig(BaseModel):
    """One Ray Train run of one stage. `run_name` identifies the run: re-running the same name in
    the same storage resumes it; a new name starts fresh."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    recipe: Recipe = Field("voicefleet", description="official: GPT-SoVITS v2's optimizers, schedules, clipping "
                           "and loss reduction as its code does them; voicefleet: warm-up + cosine restarts, "
                           "clipping, GPT on AdamW at gpt_lr_ratio x the SoVITS rate.")
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
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="voicefleet recipe: the schedule.")
    official: OfficialSchedule = Field(default_factory=OfficialSchedule, description="official recipe: the rates.")
    # absent: the recipe's value (official: no clipping), filled in by `_recipe_defaults`
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; None disables clipping "
                                    "(official recipe: None, the norm is only logged).")
    # absent: the recipe's value (official GPT: 4), filled in by `_recipe_defaults`
    accumulate: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step (official GPT: 4).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 with a GradScaler on GPU; fp32 on CPU.")
    eval_every: int = Field(20, ge=1, description="Optimizer steps between validation passes.")
    checkpoint_every: int = Field(20, ge=1,
                                  description="Optimizer steps between checkpoints (a multiple of eval_every).")
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept, best by keep_best_by.")
    eval_list: str | None = Field(None, description="List file (audio|speaker|lang|text) whose lines score "
                                  "checkpoints as they are written: speaker similarity, DNSMOS, WER.")
    eval_lines: int = Field(8, ge=1, le=1000, description="Lines of eval_list scored per checkpoint (an even subset).")
    eval_metrics: str | None = Field(None, description="Any of similarity,dnsmos,wer scored on eval_list "
                                     "(default: all; WER only for lines with a recogniser).")
    score_every: int | None = Field(None, ge=1, description="Optimizer steps between scored checkpoints, a "
                                    "multiple of checkpoint_every (default: every checkpoint; the last is always "
                                    "scored).")
    # 1 CPU: scoring runs beside the workers when the cluster has a CPU to spare, else after training
    eval_cpus: float = Field(1, ge=0, description="CPUs reserved by the scoring task (0: share the workers' CPUs).")
    keep_best_by: KeepBestBy = Field("val_recon", description="Which checkpoint is exported and registered: lowest "
                                     "val_recon, or the highest score on eval_list.")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    max_failures: int = Field(2, ge=-1, description="Worker-group restarts from the last checkpoint (-1: no limit).")
    seed: int = Field(1234, description="Seeds data order, slices, noise and dropout on every worker "
                                        "(seed + rank); official 1234.")
    adapter: AdapterKind = Field("none", description="lora: train only low-rank adapters over the frozen "
                                 "pretrained stage (a voice of a few MB); none: fine-tune every weight.")
    lora_rank: int = Field(DEFAULT_RANK, ge=1, le=MAX_RANK, description="LoRA rank (with --adapter lora).")
    lora_alpha: float = Field(DEFAULT_ALPHA, gt=0, le=65536, description="LoRA alpha: updates are scaled by "
                              "alpha / rank (with --adapter lora).")
    lora_targets: list[str] | None = Field(
        None, description="LoRA target groups, comma-separated (with --adapter lora): GPT attn, ffn (default "
        f"{','.join(DEFAULT_TARGETS['gpt'])}); SoVITS text_encoder, flow, decoder (default "
        f"{','.join(DEFAULT_TARGETS['sovits'])}).")

    @model_validator(mode="before")
    @classmethod
    def _stage_epochs(cls, data):
        if isinstance(data, dict) and data.get("epochs") is None and data.get("stage") in STAGE_EPOCHS:
            data = {**data, "epochs": STAGE_EPOCHS[data["stage"]]}
        return data

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data):
        """The official recipe's clipping and accumulation, unless the config sets them itself."""
        if isinstance(data, dict) and data.get("recipe") == "official":
            data = dict(data)
            if "grad_clip" not in data:
                data["grad_clip"] = None
            if data.get("accumulate") is None:
                data["accumulate"] = OFFICIAL_GPT_ACCUMULATE if data.get("stage") == "gpt" else 1
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
        if self.score_every is not None and self.score_every % self.checkpoint_every:
            raise ValueError(f"score_every ({self.score_every}) must be a multiple of checkpoint_every "
                             f"({self.checkpoint_every}): checkpoints are what gets scored")
        if self.keep_best_by in QUALITY_METRICS:
            needed = QUALITY_METRICS[self.keep_best_by]
            if self.eval_list is None:
                raise ValueError(f"keep_best_by {self.keep_best_by} needs an eval_list (--eval-list) to score "
                                 f"checkpoints with")
            if needed not in self.eval_metric_names():
                raise ValueError(f"keep_best_by {self.keep_best_by} needs the {needed!r} metric in eval_metrics "
                                 f"(got {self.eval_metrics!r})")
        return self

    def eval_metric_names(self) -> list[str]:
        """The metric names of `eval_metrics` (empty: all of them)."""
        return [n.strip().lower() for n in (self.eval_metrics or "").split(",") if n.strip()] or \
            [*QUALITY_METRICS.values(), "wer"]

    def scores_at(self, step: int, total_steps: int, final: bool) -> bool:
        """Whether the checkpoint written at `step` is scored on the eval list."""
        if self.eval_list is None:
            return False
        return final or step == total_steps or step % (self.score_every or self.checkpoint_every) == 0

    @model_validator(mode="after")
    def _adapter_targets(self) -> "TrainConfig":
        if self.adapter == "lora":
            try:
                self.adapter_spec()
            except AdapterError as e:
                raise ValueError(str(e)) from None
        return self

    def adapter_spec(self) -> AdapterSpec | None:
        """The adapter this run trains (None: full fine-tuning)."""
        if self.adapter == "none":
            return None
        return AdapterSpec(self.stage, self.lora_rank, self.lora_alpha, tuple(self.lora_targets or ()))

    @property
    def lr(self) -> float:
        """This stage's base learning rate (every param group's rate is a fixed share of it)."""
        if self.stage == "sovits":
            return self.sovits_lr
        return self.official.gpt_first_lr if self.recipe == "official" else self.sovits_lr * self.gpt_lr_ratio

    def rate(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """The base learning rate at optimizer step `step` (0-based)."""
        if self.recipe == "official":
            return official_learning_rate(step, self.lr, self.official, stage=self.stage,
                                          steps_per_epoch=steps_per_epoch)
        return learning_rate(step, self.lr, total_steps, self.schedule)

    def check_window(self, batches_per_epoch: int, clips: int, world: int) -> None:
        """Refuse a run whose epoch has fewer batches per worker than one accumulation window: it
        could never step (leftover micro-batches are dropped at every epoch's end)."""
        if batches_per_epoch < self.accumulate:
            raise ValueError(
                f"{clips} training clips give {batches_per_epoch} batch(es) of {self.batch_size} per worker per epoch "
                f"({world} worker(s)), fewer than accumulate={self.accumulate} micro-batches per {self.stage} step: "
                f"lower batch_size or accumulate, or add clips")

    def resolved_precision(self, device_type: str, bf16_ok: bool) -> str:
        if self.precision != "auto":
            return self.precision
        if device_type != "cuda":
            return "fp32"
        # the official recipe runs fp16 with a GradScaler (s2.json fp16_run, s1 "16-mixed")
        return "bf16" if bf16_ok and self.recipe == "voicefleet" else "fp16"

    def settings(self) -> dict:
        """Every optimizer, schedule, clipping, loss and precision setting this run uses, in words and
        numbers (recorded in checkpoints and report.json)."""
        official = self.recipe == "official"
        precision = self.precision if self.precision != "auto" else (
            "auto: fp16 + GradScaler on GPU, fp32 on CPU" if official
            else "auto: bf16 on GPUs that support it, else fp16 + GradScaler; fp32 on CPU")
        out: dict = {"recipe": self.recipe, "stage": self.stage, "seed": self.seed, "accumulate": self.accumulate,
                     "grad_clip": self.grad_clip, "precision": precision}
        if official:
            schedule = ({"kind": "ExponentialLR per epoch, stepped once before the first epoch",
                         "lr": self.sovits_lr, "lr_decay": self.official.lr_decay} if self.stage == "sovits" else
                        {"kind": "first step at ScaledAdam's constructor rate, then the rate the official scheduler "
                                 "pins", "first_lr": self.official.gpt_first_lr, "lr": self.official.gpt_lr})
        else:
            schedule = {"kind": "linear warm-up then cosine annealing with warm restarts", "lr": self.lr,
                        **self.schedule.model_dump()}
        out["schedule"] = schedule
        spec = self.adapter_spec()
        if spec is not None:
            out["adapter"] = {"kind": "lora", "rank": spec.rank, "alpha": spec.alpha, "targets": list(spec.targets),
                              "trained": "the adapter only; the pretrained stage stays frozen"}
        if self.stage == "sovits":
            out["optimizer"] = {"name": "AdamW", **SOVITS_ADAMW, "text_low_lr_rate": self.text_low_lr_rate,
                                "discriminator": "AdamW, same settings, base rate"}
            out["loss"] = "mel L1 x45 + KL x1 + feature matching + LSGAN + commitment (0: quantizer frozen)"
            out["frozen"] = ["ssl_proj", "quantizer"]
        elif official:
            out["optimizer"] = {"name": "ScaledAdam", **OFFICIAL_SCALED_ADAM}
            out["loss"] = "cross-entropy summed over every target (padding included), summed over micro-batches"
        else:
            out["optimizer"] = {"name": "AdamW", **GPT_ADAMW, "gpt_lr_ratio": self.gpt_lr_ratio}
            out["loss"] = "cross-entropy per target (mean), averaged over micro-batches"
        return json.loads(json.dumps(out))  # JSON values only (tuples as lists): report.json reads back equal

"""`SweepConfig`: one sweep's settings (kept apart from `sweep`, which imports Ray Tune, so that
the command line and the end-to-end recipe read its defaults without importing Ray)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicefleet.platform.fields import same_field
from voicefleet.platform.registry import check_voice_id
from voicefleet.platform.training.config import QUALITY_METRICS, RUN_NAME, Placement, TrainConfig
from voicefleet.platform.training.schedules import Recipe, ScheduleConfig
from voicefleet.tuning.space import SearchSpace

# What a sweep can rank trials by, and which way is better. val_objective: held-out text through GPT
# and SoVITS, DTW-aligned log-mel L1; val_recon: SoVITS teacher-forced mel L1; the scores: the
# evaluation instruments on the same syntheses as val_objective.
SWEEP_METRICS: dict[str, str] = {"val_objective": "min", "val_recon": "min",
                                 **{name: "max" for name in QUALITY_METRICS}}
SweepMetric = Literal["val_objective", "val_recon", "speaker_similarity", "dnsmos_ovrl"]


class SweepConfig(BaseModel):
    """One sweep. `sweep_id` names it in storage: the same id with `resume` continues it."""

    model_config = ConfigDict(extra="forbid")

    voice: str = Field(..., description="Voice id the best trial is registered as.")
    sweep_id: str | None = Field(None, description="Default: '<voice>-sweep'.")
    storage_path: str = same_field(TrainConfig, "storage_path", description="Runs, sweeps and the registry: a "
                                   "folder or a URI (s3://, gs://, ...).")
    trials: int = Field(8, ge=1, le=10_000, description="Trials (configurations) to run.")
    max_concurrent: int | None = Field(None, ge=1, description="Trials at once; default: as many as the cluster fits.")
    rounds: int = Field(4, ge=1, le=1000, description="Evaluations per trial; ASHA decides after each.")
    steps_per_round: int = Field(20, ge=1, description="Optimizer steps of each stage per round.")
    num_workers: int = same_field(TrainConfig, "num_workers", description="Ray Train workers (DDP ranks) per trial.")
    use_gpu: bool = same_field(TrainConfig, "use_gpu")
    gpus_per_worker: float = Field(1.0, gt=0, description="With use_gpu: GPUs per worker (fractions share one).")
    cpus_per_worker: float = same_field(TrainConfig, "cpus_per_worker")
    placement_strategy: Placement = same_field(TrainConfig, "placement_strategy")
    batch_size: int = same_field(TrainConfig, "batch_size")
    recipe: Recipe = same_field(TrainConfig, "recipe")
    space: SearchSpace = Field(default_factory=SearchSpace, description="What the trials vary (the official "
                               "recipe searches only the SoVITS rates: see SearchSpace.for_recipe).")
    seed: int = Field(0, description="Seeds Optuna's sampler and every trial's training (data order, slices, "
                                     "noise, dropout).")
    try_official_first: bool = Field(True, description="The first trial uses the official values (when in range).")
    grace_rounds: int = Field(1, ge=1, description="ASHA: rounds every trial gets before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: keep the best 1/factor at each rung.")
    objective_clips: int = Field(4, ge=1, le=64, description="Held-out clips synthesised for the objective.")
    max_tokens: int = Field(500, ge=8, description="Most semantic tokens the GPT may decode per held-out clip.")
    max_failures: int = Field(1, ge=0, description="Restarts of a trial's worker group from its last round.")
    metric: SweepMetric = Field("val_objective", description="What ranks trials, stops weak ones (ASHA) and picks "
                                "the promoted round: a loss (lower is better) or a score (higher is better).")
    eval_metrics: str | None = Field(None, description="Any of similarity,dnsmos, scored every round on the held-out "
                                     "clips the objective synthesises (default: what --metric needs, else none).")

    @field_validator("voice")
    @classmethod
    def _voice(cls, v: str) -> str:
        return check_voice_id(v)

    @model_validator(mode="after")
    def _name(self) -> "SweepConfig":
        if self.sweep_id is None:
            self.sweep_id = f"{self.voice}-sweep"
        if not RUN_NAME.match(self.sweep_id):
            raise ValueError(f"sweep id {self.sweep_id!r} must be 1-128 characters of letters, digits, '_', '.', '-'")
        self.space = self.space.for_recipe(self.recipe)
        names = self.quality_metrics()
        unknown = [n for n in names if n not in QUALITY_METRICS.values()]
        if unknown:
            raise ValueError(f"eval metric {unknown[0]!r} is not scored in sweeps; choose any of "
                             f"{','.join(QUALITY_METRICS.values())} (held-out clips carry phonemes, not text, so no WER)")
        needed = QUALITY_METRICS.get(self.metric)
        if needed is not None and needed not in names:
            if self.eval_metrics is not None:
                raise ValueError(f"metric {self.metric} needs {needed!r} among eval_metrics (got {self.eval_metrics!r})")
            self.eval_metrics = needed
        return self

    @property
    def mode(self) -> str:
        """"min" or "max": which way `metric` is better."""
        return SWEEP_METRICS[self.metric]

    def quality_metrics(self) -> list[str]:
        """The evaluation metrics scored every round (names of `voicefleet.platform.evaluation.METRICS`)."""
        return [n.strip().lower() for n in (self.eval_metrics or "").split(",") if n.strip()]

    def base_train_config(self) -> TrainConfig:
        """Every trial's run config before its sampled values (`finetune.stage_configs`) are applied."""
        return TrainConfig(stage="sovits", run_name=self.sweep_id, storage_path=self.storage_path,
                           num_workers=self.num_workers, use_gpu=self.use_gpu, cpus_per_worker=self.cpus_per_worker,
                           batch_size=self.batch_size, epochs=10_000, seed=self.seed, recipe=self.recipe,
                           eval_every=self.steps_per_round, checkpoint_every=self.steps_per_round,
                           schedule=ScheduleConfig(min_warmup_steps=self.space.min_warmup_steps))

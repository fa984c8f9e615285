"""`SweepConfig`: one sweep's settings (kept apart from `sweep`, which imports Ray Tune, so that
the command line and the end-to-end recipe read its defaults without importing Ray)."""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicefleet.models.adapter_config import DEFAULT_RANK, AdapterError, AdapterSpec
from voicefleet.platform.fields import same_field
from voicefleet.platform.registry import check_voice_id
from voicefleet.platform.training.config import QUALITY_METRICS, RUN_NAME, AdapterKind, Placement, TrainConfig
from voicefleet.platform.training.schedules import Recipe, ScheduleConfig
from voicefleet.tuning.space import SearchSpace

# What a sweep can rank trials by, and which way is better. val_objective: held-out text through GPT
# and SoVITS, DTW-aligned log-mel L1; val_recon: SoVITS teacher-forced mel L1; the scores: the
# evaluation instruments on the same syntheses as val_objective.
SWEEP_METRICS: dict[str, str] = {"val_objective": "min", "val_recon": "min",
                                 **{name: "max" for name in QUALITY_METRICS}}
SweepMetric = Literal["val_objective", "val_recon", "speaker_similarity", "dnsmos_ovrl"]
# How an adapter sweep sets each trial's LoRA alpha from its rank. fixed: alpha as given at every
# rank, as peft's LoraConfig keeps `lora_alpha` when only `r` changes (the update's scaling
# alpha / rank halves when the rank doubles); scaled: alpha grows with the rank so that alpha / rank
# stays what it is at the default rank (with the default alpha 16: alpha = 2 x rank).
AlphaRule = Literal["fixed", "scaled"]
ADAPTER_FIELDS = ("lora_rank", "lora_alpha", "alpha_rule", "lora_targets_gpt", "lora_targets_sovits")


class AdapterPlan(BaseModel):
    """What every trial of an adapter sweep shares: the fixed rank (unless the space searches it),
    alpha and its rule, and each stage's target groups. `stage_settings` turns a trial's sampled
    point into the run config's adapter fields."""

    model_config = ConfigDict(extra="forbid")

    rank: int
    alpha: float
    alpha_rule: AlphaRule
    targets: dict[str, list[str] | None]

    def rank_of(self, params: Mapping[str, Any]) -> int:
        return int(params.get("lora_rank", self.rank))

    def alpha_of(self, rank: int) -> float:
        return self.alpha if self.alpha_rule == "fixed" else self.alpha * rank / DEFAULT_RANK

    def stage_settings(self, stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """`TrainConfig` fields of one stage's adapter for the trial at `params`."""
        rank = self.rank_of(params)
        return {"adapter": "lora", "lora_rank": rank, "lora_alpha": self.alpha_of(rank),
                "lora_targets": self.targets.get(stage)}

    def describe(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trial's adapters in words and numbers (the registry lineage, the report)."""
        rank = self.rank_of(params)
        return {"kind": "lora", "rank": rank, "alpha": self.alpha_of(rank), "alpha_rule": self.alpha_rule,
                "targets": {stage: list(AdapterSpec(stage, rank, self.alpha_of(rank), tuple(t or ())).targets)
                            for stage, t in self.targets.items()}}


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
    adapter: AdapterKind = same_field(TrainConfig, "adapter", description="lora: every trial trains LoRA adapters "
                                      "over the frozen pretrained stages and the best is registered as an adapter "
                                      "voice; none: full fine-tuning.")
    lora_rank: int = same_field(TrainConfig, "lora_rank", description="LoRA rank of every trial (with --adapter "
                                "lora), unless the space searches ranks (--ranks).")
    lora_alpha: float = same_field(TrainConfig, "lora_alpha", description="LoRA alpha (with --adapter lora): at "
                                   "every rank (alpha_rule fixed) or at the default rank, scaled with the rank "
                                   "(alpha_rule scaled).")
    alpha_rule: AlphaRule = Field("fixed", description="fixed: the same alpha at every rank (peft's lora_alpha); "
                                  "scaled: alpha = alpha x rank / 8, the same alpha / rank at every rank.")
    lora_targets_gpt: list[str] | None = same_field(TrainConfig, "lora_targets",
                                                    description="GPT LoRA target groups (default attn,ffn).")
    lora_targets_sovits: list[str] | None = same_field(TrainConfig, "lora_targets", description="SoVITS LoRA "
                                                       "target groups (default text_encoder,flow).")

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
        self._check_adapter()
        return self

    def _check_adapter(self) -> None:
        # set to other than its default (so that a dumped config reads back the same)
        given = [name for name in ADAPTER_FIELDS
                 if name in self.model_fields_set and getattr(self, name) != type(self).model_fields[name].default]
        if self.adapter == "none":
            if self.space.lora_rank is not None:
                raise ValueError("searching LoRA ranks (ranks, space.lora_rank) needs adapter lora (--adapter lora)")
            if given:
                raise ValueError(f"{given[0]} sets LoRA adapters: it needs adapter lora (--adapter lora)")
            return
        if self.space.lora_rank is not None and "lora_rank" in given:
            raise ValueError(f"give either a fixed LoRA rank (rank {self.lora_rank}) or ranks to search "
                             f"({self.space.lora_rank.flag()}), not both")
        plan = self.adapter_plan()
        for rank in (self.space.lora_rank.values if self.space.lora_rank else [self.lora_rank]):
            for stage, targets in plan.targets.items():
                try:
                    AdapterSpec(stage, rank, plan.alpha_of(rank), tuple(targets or ()))  # type: ignore[arg-type]
                except AdapterError as e:
                    raise ValueError(str(e)) from None

    def adapter_plan(self) -> AdapterPlan | None:
        """The adapters every trial trains (None: full fine-tuning)."""
        if self.adapter == "none":
            return None
        return AdapterPlan(rank=self.lora_rank, alpha=self.lora_alpha, alpha_rule=self.alpha_rule,
                           targets={"sovits": self.lora_targets_sovits, "gpt": self.lora_targets_gpt})

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

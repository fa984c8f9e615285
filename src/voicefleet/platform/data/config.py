"""`PrepareConfig`: every setting of `prepare_dataset`, bounded and documented.

Defaults are the official values where the official preparation has one (durations, peak limit,
normalisation). Settings fall in two groups: those that change the dataset (checks, normalisation,
split, storage: `PrepareConfig.output_settings`, part of the dataset's fingerprint), and those that
only say how to run it (Ray resources, batch sizes), which never change a single value: every row
goes through the models alone, so two runs with different resources give the same dataset.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.data import quality
from voicefleet.text.g2pw import G2PWModelField

_RUN_FIELDS = ("cpu_batch_size", "cpu_num_cpus", "cpu_concurrency", "audio_stage", "text_stage")


class StageResources(BaseModel):
    """Ray resources of one model stage: an actor pool, one model load per actor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(1, ge=1, le=1024, description="Actors in the pool (each loads the model once).")
    num_cpus: float = Field(1.0, gt=0, le=256, description="Logical CPUs reserved per actor; torch runs "
                            "max(1, floor(num_cpus)) threads in it.")
    num_gpus: float = Field(0.0, ge=0, le=16, description="GPUs per actor (a fraction shares one GPU); "
                            "0 runs on the CPU.")
    batch_size: int = Field(4, ge=1, le=4096, description="Rows per actor call. Rows still run through the "
                            "model one at a time, so results do not depend on it.")

    @property
    def torch_threads(self) -> int:
        return max(1, math.floor(self.num_cpus))


class PrepareConfig(BaseModel):
    """Settings of `voicefleet.platform.data.prepare_dataset`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- checks (see voicefleet.platform.data.quality) ---
    min_duration_s: float = Field(quality.MIN_DURATION_S, ge=0.1, le=60.0,
                                  description=f"Shorter clips are rejected (official: {quality.MIN_DURATION_S:g} s).")
    max_duration_s: float = Field(quality.MAX_DURATION_S, gt=0.1, le=600.0,
                                  description=f"Longer clips are rejected (official: {quality.MAX_DURATION_S:g} s).")
    max_peak: float = Field(quality.OFFICIAL_MAX_PEAK, gt=0.0, le=100.0,
                            description=f"Clips whose {SAMPLE_RATE // 1000} kHz peak exceeds this are clipped "
                            f"(official: {quality.OFFICIAL_MAX_PEAK:g}).")
    max_flat_top_fraction: float = Field(quality.DEFAULT_MAX_FLAT_TOP_FRACTION, ge=0.0, le=1.0,
                                         description="Clips with a larger share of samples in plateaus at "
                                         "their peak are clipped; 1 disables this check.")
    silence_dbfs: float = Field(quality.DEFAULT_SILENCE_DBFS, ge=-120.0, le=0.0,
                                description="A clip whose loudest 20 ms frame is below this level is silent.")
    max_spectral_entropy: float = Field(quality.DEFAULT_MAX_SPECTRAL_ENTROPY, gt=0.0, le=1.0,
                                        description="Clips scoring above are noisy (the default is calibrated on "
                                        "generated voice-like clips; 1 disables the check).")
    # --- normalisation (official 2-get-hubert-wav32k.py) ---
    norm_peak: float = Field(quality.NORM_PEAK, gt=0.0, le=1.0,
                             description=f"Peak after normalisation (official maxx: {quality.NORM_PEAK:g}).")
    norm_alpha: float = Field(quality.NORM_ALPHA, ge=0.0, le=1.0,
                              description=f"Share of the peak-normalised clip in the mix "
                              f"(official: {quality.NORM_ALPHA:g}).")
    hubert_input_scale: float = Field(quality.HUBERT_INPUT_SCALE, gt=0.0, le=1e5,
                                      description=f"The HuBERT input is the mixed clip times this "
                                      f"(official: {quality.HUBERT_INPUT_SCALE:g}).")
    # --- dataset ---
    val_fraction: float = Field(0.1, ge=0.0, le=0.5, description="Share of each speaker's clips for validation "
                                "(chosen by clip-id hash; at least one per speaker with two or more clips "
                                "when above 0).")
    audio_dtype: Literal["int16", "float32"] = Field(
        "int16", description=f"Storage of the {SAMPLE_RATE // 1000} kHz audio: int16 (as the official 5-wav32k) "
                             "or float32.")
    g2pw_model: G2PWModelField = None
    # --- how to run (no effect on the result) ---
    cpu_batch_size: int = Field(8, ge=1, le=4096, description="Rows per CPU task (decode, checks, text).")
    cpu_num_cpus: float = Field(0.5, gt=0.0, le=64.0, description="Logical CPUs per CPU task.")
    cpu_concurrency: int | None = Field(None, ge=1, le=4096, description="Most CPU tasks at once (default: "
                                        "as many as the CPUs allow).")
    audio_stage: StageResources = Field(StageResources(), description="HuBERT + semantic-token actors.")
    # Text work is light per clip; half a CPU by default so one actor of each stage and a CPU task
    # fit a 2-core machine.
    text_stage: StageResources = Field(StageResources(num_cpus=0.5), description="Text front end + BERT actors.")

    @model_validator(mode="after")
    def _check_durations(self) -> "PrepareConfig":
        if self.max_duration_s <= self.min_duration_s:
            raise ValueError(f"max_duration_s ({self.max_duration_s}) must exceed min_duration_s "
                             f"({self.min_duration_s})")
        return self

    def output_settings(self) -> dict:
        """The settings that change the dataset (fingerprinted and recorded in the manifest)."""
        return self.model_dump(mode="json", exclude=set(_RUN_FIELDS))

    def thresholds(self) -> quality.QualityThresholds:
        return quality.QualityThresholds(self.min_duration_s, self.max_duration_s, self.max_peak,
                                         self.max_flat_top_fraction, self.silence_dbfs, self.max_spectral_entropy)

    def with_resources(self, *, workers: int | None = None, cpus_per_worker: float | None = None,
                       gpus_per_worker: float | None = None) -> "PrepareConfig":
        """A copy with both model stages' pool size / CPUs / GPUs per actor replaced where given."""
        changes = {k: v for k, v in (("concurrency", workers), ("num_cpus", cpus_per_worker),
                                     ("num_gpus", gpus_per_worker)) if v is not None}
        if not changes:
            return self
        return self.model_copy(update={
            "audio_stage": StageResources.model_validate({**self.audio_stage.model_dump(), **changes}),
            "text_stage": StageResources.model_validate({**self.text_stage.model_dump(), **changes}),
        })

"""The sweep's search space: learning rates and warm-up (and, for adapter sweeps, the LoRA rank),
from YAML or flags, with sane defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicefleet.models.adapter_config import MAX_RANK


class Range(BaseModel):
    """A dimension: `low` to `high`, log-uniform when `log`."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"range low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    def flag(self) -> str:
        """As a `LOW:HIGH` flag value."""
        return f"{self.low:g}:{self.high:g}"

    def nearest(self, value: float) -> float | None:
        """`value` when the range holds it, else None (a point outside the space is not tried)."""
        return value if self.low <= value <= self.high else None

    def tune_domain(self) -> Any:
        from ray import tune

        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)


class Choice(BaseModel):
    """A categorical dimension: one of `values` (the LoRA rank; Optuna's TPE samples it as a
    category, so it learns which rank does well without assuming an order)."""

    model_config = ConfigDict(extra="forbid")

    values: list[int] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _ranks(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError(f"ranks {values} repeat a value")
        bad = [v for v in values if not 1 <= v <= MAX_RANK]
        if bad:
            raise ValueError(f"adapter rank must be 1-{MAX_RANK}, got {bad[0]}")
        return values

    def flag(self) -> str:
        """As a `A,B,C` flag value."""
        return ",".join(map(str, self.values))

    def nearest(self, value: float) -> int:
        """The choice closest to `value` (the smaller on a tie)."""
        return min(self.values, key=lambda v: (abs(v - value), v))

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.choice(list(self.values))

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.CategoricalDistribution(list(self.values))


def parse_ranks(text: str) -> Choice:
    """'4,8,16' -> Choice([4, 8, 16]); a clear error for anything else."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--ranks takes whole numbers separated by commas (e.g. 4,8,16), got {text!r}") from None
    if not values:
        raise ValueError(f"--ranks takes whole numbers separated by commas (e.g. 4,8,16), got {text!r}")
    return Choice(values=values)


class SearchSpace(BaseModel):
    """What a sweep varies. `None` for an optional dimension keeps the run config's value."""

    model_config = ConfigDict(extra="forbid")

    # around the official values (1e-4, 0.4, 0.08), which the sweep's first trial tries
    sovits_lr: Range = Field(Range(low=3e-5, high=3e-4, log=True), description="SoVITS base learning rate "
                                                                            "(log-uniform).")
    gpt_lr_ratio: Range | None = Field(Range(low=0.2, high=1.0), description="GPT rate as a ratio of the SoVITS "
                                       "rate (voicefleet recipe).")
    warmup_fraction: Range | None = Field(Range(low=0.02, high=0.2), description="Warm-up as a fraction of each "
                                          "trial's steps (voicefleet recipe).")
    min_warmup_steps: int = Field(10, ge=0, description="Warm-up never shorter than this, whatever the fraction.")
    t0_fraction: Range | None = Field(None, description="First cosine cycle as a fraction of the steps after warm-up.")
    text_low_lr_rate: Range | None = Field(None, description="Share of the base rate for the SoVITS text modules.")
    lora_rank: Choice | None = Field(None, description="Adapter sweeps: the LoRA ranks to try, a categorical "
                                     "dimension (YAML: a list, e.g. [4, 8, 16]); None: every trial at one rank.")

    @field_validator("lora_rank", mode="before")
    @classmethod
    def _rank_list(cls, v: Any) -> Any:
        return {"values": v} if isinstance(v, (list, tuple)) else v

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SearchSpace":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a search space is a mapping of dimension -> {{low, high, log}}")
        return cls(**data)

    def dimensions(self) -> dict[str, Range | Choice]:
        dims: dict[str, Range | Choice] = {"sovits_lr": self.sovits_lr}
        for name in ("gpt_lr_ratio", "warmup_fraction", "t0_fraction", "text_low_lr_rate", "lora_rank"):
            if getattr(self, name) is not None:
                dims[name] = getattr(self, name)
        return dims

    def for_recipe(self, recipe: str) -> "SearchSpace":
        """The dimensions `recipe` uses: the official recipe has no GPT:SoVITS ratio (the GPT runs
        at the official rates) and no warm-up or cosine cycles, so it searches the SoVITS rates only."""
        if recipe != "official":
            return self
        return self.model_copy(update={"gpt_lr_ratio": None, "warmup_fraction": None, "t0_fraction": None})

    def tune_space(self) -> dict[str, Any]:
        """The same space as Ray Tune sampling domains (for OptunaSearch)."""
        return {name: r.tune_domain() for name, r in self.dimensions().items()}

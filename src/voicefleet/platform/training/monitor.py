"""Convergence verdicts in words, and early stopping on validation reconstruction loss.

The monitor watches two streams:
* training losses at every step (`observe_train`): generator / discriminator / KL / mel, and
  non-finite values (skipped steps);
* validation metrics at every evaluation (`observe_eval`): the reconstruction loss that early
  stopping tracks (mel L1 for SoVITS, token cross-entropy for GPT), plus KL when present.

Verdicts compare sliding windows of evaluations (`window` long): a plateau is a window-to-window
change under `plateau_change` (10%); KL is healthy inside `kl_band` and flagged when it sits
above the band and is rising; the adversarial balance is flagged when the discriminator's loss
is near zero (it wins outright) or the generator's loss stays above the discriminator's for a
whole window; a spike is a training loss over `spike_factor` x the recent median.
Early stopping: no improvement larger than `min_delta` for `patience` evaluations, after at least
`min_evaluations`.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field


class MonitorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(5, ge=2, description="Evaluations per comparison window.")
    plateau_change: float = Field(0.10, gt=0, lt=1, description="Relative window-to-window change called a plateau.")
    kl_band: tuple[float, float] = Field((0.5, 5.0), description="Healthy range of the KL loss.")
    disc_near_zero: float = Field(0.05, ge=0, description="Discriminator loss below this means it wins outright.")
    gen_over_disc: float = Field(3.0, gt=1, description="Generator loss persistently above this x discriminator's.")
    spike_factor: float = Field(3.0, gt=1, description="A training loss over this x the recent median is a spike.")
    patience: int = Field(5, ge=1, description="Evaluations without improvement before stopping early.")
    min_delta: float = Field(0.01, ge=0, description="Smallest decrease of the validation loss that counts.")
    min_evaluations: int = Field(3, ge=1, description="Never stop before this many evaluations.")
    early_stopping: bool = True


@dataclass
class Verdict:
    step: int
    kind: str  # plateau | kl_healthy | kl_rising | disc_collapse | gen_losing | spike | non_finite | early_stop
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rel_change(old: float, new: float) -> float:
    return abs(new - old) / max(abs(old), 1e-8)


class ConvergenceMonitor:
    """Feeds on losses and evaluations; produces verdicts and the early-stopping decision."""

    def __init__(self, config: MonitorConfig | None = None, *, recon_key: str = "val_recon"):
        self.cfg = config or MonitorConfig()
        self.recon_key = recon_key
        self.evals: list[dict[str, float]] = []
        self.recent_train: dict[str, deque] = {}
        self.window_train: dict[str, list[float]] = {}
        self.non_finite = 0
        self.best = math.inf
        self.best_step = -1
        self.bad_evals = 0
        self.stop = False
        self.verdicts: list[Verdict] = []
        self._active: set[str] = set()  # conditions already reported and still true

    # ---- training stream -----------------------------------------------------------------
    def observe_train(self, step: int, losses: Mapping[str, float]) -> list[Verdict]:
        new: list[Verdict] = []
        for key, value in losses.items():
            value = float(value)
            if not math.isfinite(value):
                self.non_finite += 1
                new.append(Verdict(step, "non_finite", f"step {step}: {key} was {value}; the step was skipped "
                                                       f"({self.non_finite} skipped so far)"))
                continue
            recent = self.recent_train.setdefault(key, deque(maxlen=50))
            if len(recent) >= 10:
                median = statistics.median(recent)
                if median > 0 and value > self.cfg.spike_factor * median:
                    new.append(Verdict(step, "spike", f"step {step}: {key} spiked to {value:.3g} "
                                                      f"({value / median:.1f}x its recent median {median:.3g})"))
            recent.append(value)
            self.window_train.setdefault(key, []).append(value)
        self.verdicts.extend(new)
        return new

    # ---- evaluation stream ---------------------------------------------------------------
    def observe_eval(self, step: int, metrics: Mapping[str, float]) -> list[Verdict]:
        """Record one evaluation; returns the verdicts it raised (also kept in `verdicts`)."""
        row = {k: float(v) for k, v in metrics.items()}
        # mean training losses since the last evaluation travel with it
        for key, values in self.window_train.items():
            if values:
                row.setdefault(f"train_{key}", sum(values) / len(values))
        self.window_train = {}
        self.evals.append(row)
        new = self._window_verdicts(step) + self._early_stopping(step, row)
        self.verdicts.extend(new)
        return new

    def _series(self, key: str) -> list[float]:
        return [e[key] for e in self.evals if key in e and math.isfinite(e[key])]

    def _once(self, kind: str, condition: bool, verdict: Verdict) -> list[Verdict]:
        """Report a condition when it starts holding, not again until it has stopped holding."""
        if condition and kind not in self._active:
            self._active.add(kind)
            return [verdict]
        if not condition:
            self._active.discard(kind)
        return []

    def _window_verdicts(self, step: int) -> list[Verdict]:
        w = self.cfg.window
        out: list[Verdict] = []
        for key, label in ((self.recon_key, "validation reconstruction loss"), ("train_kl", "KL loss")):
            series = self._series(key)
            if len(series) >= 2 * w:
                prev, cur = statistics.fmean(series[-2 * w:-w]), statistics.fmean(series[-w:])
                change = _rel_change(prev, cur)
                out += self._once(f"plateau:{key}", change < self.cfg.plateau_change, Verdict(
                    step, "plateau", f"{label} is on a plateau: {change:.1%} change between the last two windows "
                                     f"of {w} evaluations ({prev:.4g} -> {cur:.4g})"))
        kl = self._series("train_kl")
        if len(kl) >= w:
            lo, hi = self.cfg.kl_band
            last = kl[-w:]
            rising = all(b >= a for a, b in zip(last, last[1:])) and last[-1] > last[0]
            out += self._once("kl_rising", last[-1] > hi and rising, Verdict(
                step, "kl_rising", f"KL loss is rising past its healthy band ({last[0]:.3g} -> {last[-1]:.3g}, band "
                                   f"{lo:g}-{hi:g}): the posterior is drifting from the prior; lower the learning rate"))
            out += self._once("kl_healthy", all(lo <= v <= hi for v in last), Verdict(
                step, "kl_healthy", f"KL loss settled in its healthy band {lo:g}-{hi:g} (last {last[-1]:.3g})"))
        disc, gen = self._series("train_disc"), self._series("train_gen")
        if len(disc) >= w:
            d = disc[-w:]
            out += self._once("disc_collapse", max(d) < self.cfg.disc_near_zero, Verdict(
                step, "disc_collapse", f"discriminator loss is near zero for {w} evaluations (max {max(d):.3g}): it "
                                       f"wins outright and the generator gets little useful signal"))
            if len(gen) >= w:
                g = gen[-w:]
                losing = all(gi > self.cfg.gen_over_disc * di for gi, di in zip(g, d))
                out += self._once("gen_losing", losing, Verdict(
                    step, "gen_losing", f"generator loss stayed above {self.cfg.gen_over_disc:g}x the discriminator's "
                                        f"for {w} evaluations ({g[-1]:.3g} vs {d[-1]:.3g})"))
        return out

    def _early_stopping(self, step: int, row: Mapping[str, float]) -> list[Verdict]:
        value = row.get(self.recon_key)
        if value is None or not math.isfinite(value):
            return []
        if value < self.best - self.cfg.min_delta:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        if (self.cfg.early_stopping and not self.stop and len(self.evals) >= self.cfg.min_evaluations
                and self.bad_evals >= self.cfg.patience):
            self.stop = True
            return [Verdict(step, "early_stop", f"stopping early: {self.recon_key} has not improved by more than "
                                                f"{self.cfg.min_delta:g} for {self.bad_evals} evaluations (best "
                                                f"{self.best:.4g} at step {self.best_step})")]
        return []

    @property
    def improved(self) -> bool:
        """Whether the latest evaluation is the best so far (save the best checkpoint then)."""
        return self.bad_evals == 0 and self.best_step >= 0

    def summary(self) -> list[str]:
        return [v.message for v in self.verdicts if v.kind != "spike"] + (
            [f"{sum(v.kind == 'spike' for v in self.verdicts)} loss spike(s)"]
            if any(v.kind == "spike" for v in self.verdicts) else [])

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"evals": self.evals, "recent_train": {k: list(v) for k, v in self.recent_train.items()},
                "window_train": self.window_train, "non_finite": self.non_finite, "best": self.best,
                "best_step": self.best_step, "bad_evals": self.bad_evals, "stop": self.stop,
                "verdicts": [v.to_dict() for v in self.verdicts], "active": sorted(self._active)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evals = [dict(e) for e in state["evals"]]
        self.recent_train = {k: deque(v, maxlen=50) for k, v in state["recent_train"].items()}
        self.window_train = {k: list(v) for k, v in state["window_train"].items()}
        self.non_finite, self.best, self.best_step = state["non_finite"], state["best"], state["best_step"]
        self.bad_evals, self.stop = state["bad_evals"], state["stop"]
        self.verdicts = [Verdict(**v) for v in state["verdicts"]]
        self._active = set(state["active"])

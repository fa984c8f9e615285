"""Both stages of a voice fine-tuned side by side, in rounds, and scored through the whole path.

A sweep trial needs an intermediate result that depends on both learning rates, so it cannot
train SoVITS to the end and then the GPT. `VoiceFinetune` holds both stages (built exactly as
the single-stage runs build them, from the pretrained files) and advances them in rounds:
`train("sovits", n)`, `train("gpt", n)`, then `evaluate()` synthesises the held-out clips
with the current GPT and SoVITS (`objective.voice_reconstruction_loss`) beside each stage's own
teacher-forced validation loss, and optionally scores the same syntheses with the evaluation
instruments (speaker similarity, DNSMOS: `objective.quality_scores`). It is plain PyTorch; `trial.py` runs it on Ray Train workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from voicefleet.models import adapters as lora
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.training.batches import Example, bucketed_batches
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.scheduler import StepSchedule
from voicefleet.platform.training.schedules import ScheduleConfig
from voicefleet.platform.training.stages import unwrap
from voicefleet.platform.training.worker import build_stage, seed_everything
from voicefleet.tuning.config import AdapterPlan
from voicefleet.tuning.objective import HeldOut, quality_scores, reconstruction_loss, synthesize_held_out

STAGES = ("sovits", "gpt")
# A voice that says nothing for some held-out clip scores this instead of infinity, so that the
# searcher and the scheduler can still rank it (log-mel L1 of real speech is a few units).
SILENT_SCORE = 100.0


def stage_configs(base: TrainConfig, params: Mapping[str, float], total_steps: int,
                  min_warmup_steps: int, adapter: AdapterPlan | None = None) -> dict[str, TrainConfig]:
    """The two stages' run configs for one trial: `base` with the sampled learning rates and
    schedule (`sovits_lr`, `gpt_lr_ratio`, `warmup_fraction`, optional `t0_fraction`,
    `text_low_lr_rate`) and, for an adapter sweep, each stage's adapter (`adapter`, with the
    sampled `lora_rank` when the space searches it)."""
    warmup_fraction = float(params.get("warmup_fraction", base.schedule.warmup_fraction))
    schedule = base.schedule.model_copy(update={"warmup_fraction": warmup_fraction,
                                                "min_warmup_steps": min_warmup_steps})
    if params.get("t0_fraction") is not None:
        after_warmup = max(1, total_steps - schedule.warmup_steps(total_steps))
        schedule = schedule.model_copy(update={"t0": max(1, round(float(params["t0_fraction"]) * after_warmup))})
    update: dict[str, Any] = {"schedule": ScheduleConfig(**schedule.model_dump()), "max_steps": total_steps}
    for key in ("sovits_lr", "gpt_lr_ratio", "text_low_lr_rate"):
        if params.get(key) is not None:
            update[key] = float(params[key])
    common = base.model_dump() | update
    if base.recipe == "official" and base.accumulate == 1:
        common.pop("accumulate")  # each stage takes the recipe's own (GPT: 4 micro-batches per step)
    return {stage: TrainConfig(**{**common, "stage": stage,
                                  **(adapter.stage_settings(stage, params) if adapter else {})})
            for stage in STAGES}


def held_out_set(train: Sequence[Example], val: Sequence[Example], max_clips: int) -> HeldOut:
    """The prompt is the training clip closest to 6 s (a typical reference length); the clips to say
    are the validation ones (never trained on), or the last training clips when there are none."""
    reference = min(train, key=lambda e: (abs(len(e.wav32k) / SAMPLE_RATE - 6.0), e.clip_id))
    clips = list(val) if val else [e for e in train if e is not reference][-max_clips:]
    return HeldOut(reference=reference, clips=clips[:max_clips])


@dataclass
class _StageState:
    stage: Any  # SoVITSStage | GPTStage
    models: dict[str, torch.nn.Module]
    collate: Callable
    schedulers: list[StepSchedule]
    val_batches: list
    step: int = 0
    epoch: int = 0
    consumed: int = 0


class VoiceFinetune:
    """SoVITS and GPT of one voice, trained in alternating rounds (see the module docstring).

    `prepare_model` wraps a model for data parallelism (Ray Train's `prepare_model`, or the
    identity on one process); `rank`/`world` pick this process's share of every epoch.
    """

    def __init__(self, configs: Mapping[str, TrainConfig], pretrained: Mapping[str, str], train: Sequence[Example],
                 val: Sequence[Example], *, device: torch.device, prepare_model: Callable | None = None,
                 rank: int = 0, world: int = 1, objective_clips: int = 4):
        if not train:
            raise ValueError("no training clips")
        seed_everything(configs["sovits"].seed, rank)  # same seed, data and world size: the same run
        self.configs, self.device, self.rank, self.world = dict(configs), device, rank, world
        self.train_examples = list(train)
        self.lengths = [len(e.semantic) for e in train]
        self.held_out = held_out_set(train, val, objective_clips)
        val_examples = list(val) or list(train[: max(1, min(4, len(train)))])
        prepare = prepare_model or (lambda model, **_: model.to(device))
        self.stages: dict[str, _StageState] = {}
        for name in STAGES:
            cfg = self.configs[name]
            cfg.check_window(math.ceil(math.ceil(len(train) / cfg.batch_size) / world), len(train), world)
            stage, models, collate = build_stage(cfg, dict(pretrained), device, prepare)
            total = int(cfg.max_steps or 1)
            schedulers = [StepSchedule(opt, cfg, total, steps_per_epoch=self.steps_per_epoch(cfg))
                          for opt in stage.optimizers]
            batches = [collate(val_examples[i:i + cfg.batch_size]) for i in range(0, len(val_examples), cfg.batch_size)]
            self.stages[name] = _StageState(stage, models, collate, schedulers, batches)

    def steps_per_epoch(self, cfg: TrainConfig) -> int:
        batches = math.ceil(math.ceil(len(self.train_examples) / cfg.batch_size) / self.world)
        return max(1, batches // cfg.accumulate)

    def steps(self, stage: str) -> int:
        return self.stages[stage].step

    def learning_rate(self, stage: str) -> float:
        return float(self.stages[stage].schedulers[0].get_last_lr()[0])

    def adapters(self) -> list:
        """The LoRA adapters the stages train (empty: full fine-tuning)."""
        return [s.stage.adapter for s in self.stages.values() if s.stage.adapter is not None]

    def train(self, stage: str, n_steps: int) -> dict[str, float]:
        """`n_steps` optimizer steps of one stage; the mean of each training metric over them."""
        with lora.use_adapter(*self.adapters()):  # an adapter stage's hooks add its adapter to the frozen layers
            return self._train(stage, n_steps)

    def _train(self, stage: str, n_steps: int) -> dict[str, float]:
        s, cfg = self.stages[stage], self.configs[stage]
        seen: dict[str, list[float]] = {}
        target = s.step + n_steps
        while s.step < target:
            batches = list(bucketed_batches(self.lengths, cfg.batch_size, seed=cfg.seed, epoch=s.epoch, rank=self.rank,
                                            world_size=self.world))
            usable = len(batches) - len(batches) % cfg.accumulate
            while s.consumed < usable and s.step < target:
                i = s.consumed
                last_micro = (i + 1) % cfg.accumulate == 0
                batch = s.collate([self.train_examples[j] for j in batches[i]]).to(self.device)
                metrics = s.stage.train_step(batch, last_micro)
                s.consumed = i + 1
                if not last_micro:
                    continue
                if not metrics.get("skipped"):
                    for sched in s.schedulers:
                        sched.step()
                s.step += 1
                for k, v in metrics.items():
                    if v is not None:
                        seen.setdefault(k, []).append(float(v))
            if s.consumed >= usable:
                s.epoch, s.consumed = s.epoch + 1, 0
        return {f"train_{stage}_{k}": float(np.nanmean(v)) for k, v in seen.items() if v}

    def evaluate(self, *, max_tokens: int = 500, quality: Sequence[str] = ()) -> dict[str, float]:
        """Both stages' teacher-forced validation losses and the full-path objective.

        val_recon: SoVITS mel L1 of held-out clips decoded from their own codes; val_ce / val_top1:
        GPT token cross-entropy and accuracy; val_objective: held-out text -> GPT -> SoVITS ->
        log-mel, DTW-aligned L1 to the recording; with `quality` (evaluation metric names, e.g.
        "similarity", "dnsmos"), their scores of the same syntheses (`speaker_similarity`,
        `dnsmos_ovrl`, ...). Computed on rank 0 and shared with every rank.
        """
        with lora.use_adapter(*self.adapters()):
            return self._evaluate(max_tokens, quality)

    def _evaluate(self, max_tokens: int, quality: Sequence[str]) -> dict[str, float]:
        metrics = {}
        sovits = self.stages["sovits"]
        metrics.update(sovits.stage.evaluate(sovits.val_batches))
        gpt_metrics = self.stages["gpt"].stage.evaluate(self.stages["gpt"].val_batches)
        metrics.update(val_ce=gpt_metrics["val_ce"], val_top1=gpt_metrics["val_top1"])
        shared: list[dict[str, float] | None] = [None]
        if self.rank == 0:
            waves = synthesize_held_out(unwrap(self.stages["gpt"].models["gpt"]), unwrap(sovits.models["generator"]),
                                        self.held_out, max_tokens=max_tokens)
            value = reconstruction_loss(self.held_out, waves)
            shared = [{"val_objective": min(value, SILENT_SCORE) if math.isfinite(value) else SILENT_SCORE,
                       **(quality_scores(self.held_out, waves, quality) if quality else {})}]
        if self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(shared, src=0)
        metrics.update({k: float(v) for k, v in (shared[0] or {}).items()})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"models": {}, "stages": {}}
        for name, s in self.stages.items():
            out["models"].update({k: unwrap(m).state_dict() for k, m in s.models.items()})
            out["stages"][name] = {"optimizers": [o.state_dict() for o in s.stage.optimizers],
                                   "schedulers": [x.state_dict() for x in s.schedulers],
                                   "scaler": s.stage.scaler.state_dict(), "skipped": s.stage.skipped,
                                   "step": s.step, "epoch": s.epoch, "consumed": s.consumed}
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, s in self.stages.items():
            for key, model in s.models.items():
                unwrap(model).load_state_dict(state["models"][key])
            saved = state["stages"][name]
            for opt, o in zip(s.stage.optimizers, saved["optimizers"]):
                opt.load_state_dict(o)
            for sched, o in zip(s.schedulers, saved["schedulers"]):
                sched.load_state_dict(o)
            s.stage.scaler.load_state_dict(saved["scaler"])
            s.stage.skipped = saved["skipped"]
            s.step, s.epoch, s.consumed = saved["step"], saved["epoch"], saved["consumed"]


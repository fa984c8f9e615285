"""The per-worker training function that Ray Train runs on every worker (DDP over gloo or nccl).

Every worker loads the prepared examples, builds its stage from the pretrained (or resumed)
weights, and trains on its share of each epoch's length-bucketed batches. At every evaluation
all workers report the same metrics (so their report calls stay in step); rank 0 also writes a
checkpoint: models, optimizers, schedulers, scaler, step, RNG states and the monitor
(`checkpointing.report`: a temporary folder handed to `ray.train.report`, which stores it
atomically). A restarted worker group (after a failure) or a re-run of the same run name resumes
from the last one (`checkpointing.resume`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voicefleet.models import adapters as lora
from voicefleet.platform.training import checkpointing
from voicefleet.platform.training.batches import bucketed_batches, collate_gpt, collate_sovits
from voicefleet.platform.training.config import QUALITY_METRICS, TrainConfig
from voicefleet.platform.training.monitor import ConvergenceMonitor
from voicefleet.platform.training.scheduler import StepSchedule
from voicefleet.platform.training.stages import GPTStage, OptimConfig, SoVITSStage, unwrap

logger = logging.getLogger(__name__)

# Set by tests to learn the workers' process ids (to kill one mid-run) and Ray node ids (to check placement).
PID_DIR_ENV = "VOICEFLEET_TRAIN_PID_DIR"


def build_stage(cfg: TrainConfig, pretrained: dict[str, str], device: torch.device, prepare_model):
    """Models from the pretrained files, wrapped for DDP by `prepare_model`, and their stage."""
    from voicefleet.models.checkpoint.discriminator_io import load_discriminator
    from voicefleet.models.checkpoint.gpt_io import load_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits

    precision = cfg.resolved_precision(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
    optim = OptimConfig(lr=cfg.lr, grad_clip=cfg.grad_clip, accumulate=cfg.accumulate, precision=precision,
                        recipe=cfg.recipe)
    spec = cfg.adapter_spec()
    if cfg.stage == "sovits":
        loaded = load_sovits(pretrained["sovits_g"])
        if not loaded.has_posterior:
            raise ValueError(f"{pretrained['sovits_g']} has no posterior encoder (enc_q): fine-tuning starts from a "
                             "pretrained s2G file, not from an exported voice")
        # an adapter run freezes the generator and trains its adapter; the discriminator trains as usual
        adapter = lora.install_for_training(loaded.model, spec) if spec else None
        g = prepare_model(loaded.model.train(), parallel_strategy_kwargs={"find_unused_parameters": True})
        d = prepare_model(load_discriminator(pretrained["sovits_d"]).train())
        stage = SoVITSStage(g, d, device, optim, text_low_lr_rate=cfg.text_low_lr_rate)
        stage.adapter = adapter
        return stage, {"generator": g, "discriminator": d}, collate_sovits
    gpt, _, _ = load_gpt(pretrained["gpt"])
    adapter = lora.install_for_training(gpt, spec) if spec else None
    gpt = prepare_model(gpt.train())
    stage = GPTStage(gpt, device, optim)
    stage.adapter = adapter
    return stage, {"gpt": gpt}, collate_gpt


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed every random source a worker draws from (Python, NumPy, torch on every device) with
    `seed + rank`: with the same seed, data and worker count, the data order (`bucketed_batches`,
    seeded apart), the training slices, the posterior noise and dropout repeat exactly."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from voicefleet.platform.training.data import load_examples

    cfg = TrainConfig(**loop_config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if os.environ.get(PID_DIR_ENV):
        Path(os.environ[PID_DIR_ENV], f"rank{rank}.pid").write_text(str(os.getpid()))
        Path(os.environ[PID_DIR_ENV], f"rank{rank}.node").write_text(ray.get_runtime_context().get_node_id())
    device = ray.train.torch.get_device()
    seed_everything(cfg.seed, rank)

    train_ex = load_examples(loop_config["dataset"], "train")
    val_ex = load_examples(loop_config["dataset"], "val") or train_ex[: max(1, min(4, len(train_ex)))]
    if not train_ex:
        raise ValueError(f"no training clips in {loop_config['dataset']}")
    stage, models, collate = build_stage(cfg, loop_config["pretrained"], device, ray.train.torch.prepare_model)

    lengths = [len(e.semantic) for e in train_ex]
    batches_per_epoch = math.ceil(math.ceil(len(train_ex) / cfg.batch_size) / world)
    cfg.check_window(batches_per_epoch, len(train_ex), world)
    steps_per_epoch = max(1, batches_per_epoch // cfg.accumulate)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    schedulers = [StepSchedule(opt, cfg, total_steps, steps_per_epoch=steps_per_epoch) for opt in stage.optimizers]
    monitor = ConvergenceMonitor(cfg.monitor)
    step, epoch, consumed = 0, 0, 0
    history: list[dict[str, Any]] = []  # every report of the run, across restarts (kept in checkpoints)
    resumes: list[int] = []  # steps at which the run was resumed

    # an adapter run's hooks add its adapter to the frozen layers for everything in this block
    with lora.use_adapter(stage.adapter):
        state = checkpointing.resume(device)
        if state is not None:
            for name, model in models.items():
                unwrap(model).load_state_dict(state["models"][name])
            for opt, saved in zip(stage.optimizers, state["optimizers"]):
                opt.load_state_dict(saved)
            for sched, saved in zip(schedulers, state["schedulers"]):
                sched.load_state_dict(saved)
            stage.scaler.load_state_dict(state["scaler"])
            stage.skipped = state["skipped"]
            monitor.load_state_dict(state["monitor"])
            step, epoch, consumed = state["step"], state["epoch"], state["consumed"]
            history, resumes = state["history"], state["resumes"] + [state["step"]]
            logger.info("rank %d resumed at step %d (epoch %d)", rank, step, epoch)

        val_batches = [collate(val_ex[i:i + cfg.batch_size]) for i in range(0, len(val_ex), cfg.batch_size)]
        progress = None
        if rank == 0:
            from ray.experimental import tqdm_ray

            progress = tqdm_ray.tqdm(total=total_steps, desc=f"{cfg.stage} {cfg.run_name}")
            progress.update(step)
        window: dict[str, list[float]] = {}
        started = time.time()
        start_step = step
        while step < total_steps and not monitor.stop:
            batches = list(bucketed_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=rank,
                                            world_size=world))
            for i in range(consumed, len(batches) - len(batches) % cfg.accumulate):
                last_micro = (i + 1) % cfg.accumulate == 0
                metrics = stage.train_step(collate([train_ex[j] for j in batches[i]]).to(device), last_micro)
                consumed = i + 1
                if not last_micro:
                    continue
                if not metrics.get("skipped"):
                    for sched in schedulers:
                        sched.step()
                step += 1
                if progress is not None:
                    progress.update(1)
                monitor.observe_train(step, {k: v for k, v in metrics.items()
                                             if k in ("mel", "kl", "gen", "disc", "ce")})
                for k, v in metrics.items():
                    window.setdefault(k, []).append(v)
                if step % cfg.eval_every == 0 or step == total_steps:
                    _evaluate_and_report(cfg, stage, models, schedulers, monitor, val_batches, window, rank, step,
                                         epoch, consumed, total_steps, started, start_step, history, resumes)
                    window = {}
                if step >= total_steps or monitor.stop:
                    break
            else:
                epoch, consumed = epoch + 1, 0
                continue
            break
        if window:  # stopped between evaluations: evaluate once more so the last state is scored
            _evaluate_and_report(cfg, stage, models, schedulers, monitor, val_batches, window, rank, step, epoch,
                                 consumed, total_steps, started, start_step, history, resumes)
        elif state is not None and step == start_step and history:
            # resumed from the run's final checkpoint (killed after writing it): nothing is left to
            # train, but the resume belongs in the record, so the last report goes out again, once,
            # with a checkpoint that records it (the history gets no duplicate row)
            last = dict(history[-1], resumed_at=resumes[-1])
            _save_and_report(cfg, stage, models, schedulers, monitor, step, epoch, consumed, history, resumes, last,
                             with_checkpoint=True, dir_suffix=f"_resume{len(resumes)}")  # own folder
        if progress is not None:
            progress.close()


def _evaluate_and_report(cfg, stage, models, schedulers, monitor, val_batches, window, rank, step, epoch,
                         consumed, total_steps, started, start_step, history, resumes) -> None:
    val = stage.evaluate(val_batches)
    verdicts = monitor.observe_eval(step, val)
    report = {f"train_{k}": float(np.nanmean(v)) for k, v in window.items() if v}
    report.update(val)
    elapsed = time.time() - started
    rate = (step - start_step) / elapsed if elapsed > 0 else 0.0
    report.update(step=step, epoch=epoch, lr=float(schedulers[0].get_last_lr()[0]), skipped_steps=stage.skipped,
                  stop=bool(monitor.stop), total_steps=total_steps, steps_per_s=rate,
                  eta_s=(total_steps - step) / rate if rate > 0 else float("nan"),
                  resumed_at=resumes[-1] if resumes else 0,
                  verdicts=json.dumps([v.to_dict() for v in verdicts], ensure_ascii=False))
    history.append(dict(report))
    if rank == 0:
        logger.info("step %d/%d %s", step, total_steps,
                    " ".join(f"{k}={v:.4g}" for k, v in report.items() if isinstance(v, float)))
        for v in verdicts:
            logger.info("verdict at step %d: %s", v.step, v.message)
    with_checkpoint = step % cfg.checkpoint_every == 0 or step == total_steps or monitor.stop
    _save_and_report(cfg, stage, models, schedulers, monitor, step, epoch, consumed, history, resumes, report,
                     with_checkpoint=with_checkpoint,
                     validation=with_checkpoint and cfg.scores_at(step, total_steps, final=bool(monitor.stop)))


def _save_and_report(cfg, stage, models, schedulers, monitor, step, epoch, consumed, history, resumes, report, *,
                     with_checkpoint: bool, dir_suffix: str = "", validation: bool = False) -> None:
    """Report on every rank; with the run state as a checkpoint (written by rank 0), scored on the
    eval list by a separate task when `validation` (`voicefleet.platform.training.quality`)."""

    def run_state() -> dict[str, Any]:
        return {"models": {n: unwrap(m).state_dict() for n, m in models.items()},
                "optimizers": [o.state_dict() for o in stage.optimizers],
                "schedulers": [s.state_dict() for s in schedulers], "scaler": stage.scaler.state_dict(),
                "skipped": stage.skipped, "monitor": monitor.state_dict(), "step": step, "epoch": epoch,
                "consumed": consumed, "config": cfg.model_dump(), "settings": cfg.settings(), "history": history,
                "resumes": resumes}

    if cfg.keep_best_by in QUALITY_METRICS:
        # Ray Train ranks checkpoints by this key; the score arrives later from the scoring task and
        # replaces the placeholder (an unscored checkpoint ranks below every scored one)
        report = {**report, cfg.keep_best_by: float("nan")}
    checkpointing.report(report, checkpoint_state=run_state if with_checkpoint else None,
                         dir_name=f"checkpoint_step{step:07d}{dir_suffix}", validation=validation)

"""One sweep trial: a Ray Train run that fine-tunes both stages of the voice in rounds.

`voice_trial` is the Tune function trainable. It builds a `TorchTrainer` whose workers run
`finetune_loop_per_worker`, named after the sweep and the trial id (so a restored trial finds
its run and resumes from its last checkpoint), and forwards every round's report to Tune with
`TuneReportCallback`, which gives ASHA an intermediate result per round.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from ray.tune import Callback

from voicefleet.platform.training import checkpointing
from voicefleet.platform.training.config import TrainConfig
from voicefleet.tuning.config import AdapterPlan
from voicefleet.tuning.finetune import STAGES, VoiceFinetune, stage_configs

logger = logging.getLogger(__name__)


# Rank 0 names its worker group's placement group in every report, so the sweep's driver can
# release it when Tune ends the trial (see `PlacementGroupReaper`).
PLACEMENT_GROUP_KEY = "placement_group_id"


def finetune_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: `rounds` x (SoVITS steps, GPT steps, evaluation + report + checkpoint)."""
    import ray.train
    import ray.train.torch

    from voicefleet.platform.training.data import load_examples

    configs = {name: TrainConfig(**cfg) for name, cfg in loop_config["configs"].items()}
    rounds, per_round = int(loop_config["rounds"]), int(loop_config["steps_per_round"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed = configs["sovits"].seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    train = load_examples(loop_config["dataset"], "train")
    val = load_examples(loop_config["dataset"], "val")
    if not train:
        raise ValueError(f"no training clips in {loop_config['dataset']}")
    tuner = VoiceFinetune(configs, loop_config["pretrained"], train, val, device=ray.train.torch.get_device(),
                          prepare_model=ray.train.torch.prepare_model, rank=rank, world=world,
                          objective_clips=int(loop_config["objective_clips"]))
    done, history = 0, []
    state = checkpointing.resume(ray.train.torch.get_device())
    if state is not None:
        tuner.load_state_dict(state["finetune"])
        done, history = state["round"], state["history"]
        logger.info("rank %d resumed after round %d", rank, done)
    if done >= rounds and history:
        # finished before the sweep's driver recorded it: hand the last result over again
        ray.train.report(history[-1])
        return
    for round_index in range(done, rounds):
        metrics: dict[str, Any] = {}
        for stage in STAGES:
            metrics.update(tuner.train(stage, per_round))
        metrics.update(tuner.evaluate(max_tokens=int(loop_config["max_tokens"]),
                                      quality=loop_config.get("quality_metrics") or ()))
        metrics.update(round=round_index + 1, sovits_steps=tuner.steps("sovits"), gpt_steps=tuner.steps("gpt"),
                       sovits_lr=tuner.learning_rate("sovits"), gpt_lr=tuner.learning_rate("gpt"))
        history.append(dict(metrics))
        metrics[PLACEMENT_GROUP_KEY] = ray.get_runtime_context().get_placement_group_id() or ""
        if rank == 0:
            logger.info("round %d/%d: %s", round_index + 1, rounds, " ".join(
                f"{k} {metrics[k]:.4f}" for k in ("val_objective", "val_recon", "val_ce", "speaker_similarity",
                                                  "dnsmos_ovrl") if k in metrics))

        def run_state(round_done: int = round_index + 1) -> dict[str, Any]:
            finetune = tuner.state_dict()
            sovits = tuner.stages["sovits"]
            return {"finetune": finetune, "round": round_done, "history": history,
                    "configs": {k: c.model_dump() for k, c in configs.items()},
                    # what the single-stage exporter (`export_best`) reads: weights and position
                    "models": finetune["models"], "epoch": sovits.epoch, "step": sovits.step}

        checkpointing.report(metrics, checkpoint_state=run_state, dir_name=f"checkpoint_round{round_index + 1:04d}")


def trial_run_name(sweep_id: str, trial_id: str) -> str:
    return f"{sweep_id}-{trial_id}"


def voice_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """Tune function trainable: one trial's Ray Train run (see the module docstring).

    `config` holds the sampled dimensions; `setup` everything fixed for the sweep (dataset,
    pretrained files, base run config, rounds, scaling, storage, the adapters of an adapter sweep).
    """
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    name = trial_run_name(setup["sweep_id"], trial_id)
    total = int(setup["rounds"]) * int(setup["steps_per_round"])
    base = TrainConfig(**{**setup["base"], "run_name": name})
    try:
        adapter = AdapterPlan(**setup["adapter"]) if setup.get("adapter") else None
        configs = stage_configs(base, config, total, int(setup["min_warmup_steps"]), adapter)
    except ValidationError as e:  # a configuration no run accepts fails this trial, not the sweep
        raise ValueError("invalid trial configuration: " + "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None
    scaling = setup["scaling"]
    trainer = TorchTrainer(
        finetune_loop_per_worker,
        train_loop_config={"configs": {k: c.model_dump() for k, c in configs.items()}, "dataset": setup["dataset"],
                           "pretrained": setup["pretrained"], "rounds": setup["rounds"],
                           "steps_per_round": setup["steps_per_round"], "objective_clips": setup["objective_clips"],
                           "max_tokens": setup["max_tokens"], "quality_metrics": setup.get("quality_metrics", [])},
        scaling_config=ScalingConfig(num_workers=scaling["num_workers"], use_gpu=scaling["use_gpu"],
                                     resources_per_worker=scaling["resources_per_worker"],
                                     placement_strategy=scaling["placement_strategy"]),
        run_config=RunConfig(
            name=name, storage_path=setup["train_storage"], callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=int(setup["max_failures"])),
            # the best round is what the sweep exports; the newest is what a restart resumes from
            checkpoint_config=CheckpointConfig(num_to_keep=2,
                                               checkpoint_score_attribute=setup.get("metric", "val_objective"),
                                               checkpoint_score_order=setup.get("mode", "min"))),
    )
    trainer.fit()


class PlacementGroupReaper(Callback):
    """A Tune callback that removes a trial's Ray Train placement group once the trial ends.

    When ASHA stops a trial (or it reaches its last round), Tune ends the trial's actor while its
    `TorchTrainer` may still hold the workers' placement group. Placement groups live as long as
    the job that made them, and Ray Train's own clean-up needs the dashboard's state API, which a
    cluster may run without; the CPUs/GPUs would stay reserved and the next trials would wait for
    them forever. The workers name their placement group in every report; this removes it.
    """

    def __init__(self):
        self.groups: dict[str, str] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        group = result.get(PLACEMENT_GROUP_KEY)
        if group:
            self.groups[trial.trial_id] = group

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    def _release(self, trial) -> None:
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

        group = self.groups.pop(trial.trial_id, None)
        if not group:
            return
        pg = PlacementGroup(PlacementGroupID(bytes.fromhex(group)))
        try:
            if placement_group_table(pg).get("state") not in (None, "REMOVED"):
                remove_placement_group(pg)
                logger.info("released the placement group of ended trial %s", trial.trial_id)
        except Exception as e:  # already gone, or the cluster is shutting down
            logger.debug("placement group %s of trial %s: %s", group, trial.trial_id, e)


# What a trial's TensorBoard files hold of each round's report: the losses by stage, the
# validation losses, the learning rates and the held-out scores (Tune's own keys are left out)
TB_KEYS = ("train_", "val_", "sovits_lr", "gpt_lr")
TB_SCORES = ("speaker_similarity", "speaker_similarity_to_ref", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


def tensorboard_scalars(result: dict[str, Any]) -> dict[str, float]:
    """A round's report as TensorBoard tags (`train/sovits_mel`, `val/objective`, `eval/dnsmos_ovrl`, ...):
    the tags single-stage training writes for the same quantities."""
    import math

    out = {}
    for key, value in result.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        if key in TB_SCORES:
            key = f"eval_{key}"
        elif not key.startswith(TB_KEYS):
            continue
        out[key.replace("_", "/", 1)] = float(value)
    return out


class TrialTensorBoard(Callback):
    """A Tune callback that writes every trial's rounds as TensorBoard event files, in
    `<folder>/<trial id>/tb`, on the sweep's driver (so the files land beside the sweep's report
    wherever the workers ran); the step axis is the optimizer steps per stage."""

    def __init__(self, folder: str):
        self.folder = folder
        self._writers: dict[str, Any] = {}

    def __getstate__(self):  # Tune saves its callbacks with the experiment; open files stay behind
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.folder, self._writers = state["folder"], {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from pathlib import Path

        from tensorboardX import SummaryWriter

        writer = self._writers.get(trial.trial_id)
        if writer is None:
            writer = self._writers[trial.trial_id] = SummaryWriter(str(Path(self.folder) / trial.trial_id / "tb"))
        step = int(result.get("sovits_steps") or result.get("round") or 0)
        for tag, value in tensorboard_scalars(result).items():
            writer.add_scalar(tag, value, step)
        writer.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial)

    def _close(self, trial) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()


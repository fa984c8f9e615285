"""A hyperparameter sweep for one voice: Ray Tune + Optuna over fine-tuning runs on Ray Train.

    run_sweep(SweepConfig(voice="alice", trials=8), dataset_dir, pretrained_dir)

Optuna's TPE sampler (seeded) proposes the SoVITS learning rate, the GPT:SoVITS ratio and the
warm-up (optionally T_0 and `text_low_lr_rate`, and for an adapter sweep, `adapter="lora"`, the
LoRA rank among `space.lora_rank`); the first trial tries the official defaults (an adapter sweep:
at the listed rank nearest the default).
Every trial (`trial.voice_trial`) fine-tunes both stages in rounds on its own Ray Train run and
reports `val_objective` (held-out text through GPT and SoVITS, DTW-aligned log-mel L1) after
each round, with speaker similarity and DNSMOS of the same syntheses when asked (`eval_metrics`);
ASHA stops trials that trail the others at the same round on the sweep's `metric` (default
`val_objective`; `speaker_similarity` or `dnsmos_ovrl` rank by a score, higher is better). A trial that fails is
recorded with its error and the sweep goes on. An interrupted sweep resumes with
`resume=True` (`Tuner.restore`): finished trials are kept, unfinished ones continue from their
last round's checkpoint, and the searcher's state carries over, so nothing is lost or repeated.

At the end the best round of the best trial is exported in the official formats
(`best/<sweep>-<trial>.pth`, `.ckpt`) and registered as the voice, with the sweep and trial as
its lineage (an adapter sweep's best: `best/<sweep>-<trial>-<stage>.lora.safetensors`, an adapter
voice with its rank, alpha and targets in the lineage); `report.md`, `trials.csv`,
`importances.json`, two PNG plots and every trial's TensorBoard files (`trials/<trial id>/tb`) are written into `<storage>/sweeps/<sweep_id>/`.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from voicefleet.platform.cluster import ensure_ray
from voicefleet.platform.training.api import check_sovits_trainable, find_training_pretrained, resolve_storage
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.schedules import ScheduleConfig
from voicefleet.tuning.finetune import STAGES, stage_configs
from voicefleet.tuning.config import SweepConfig  # noqa: F401 - importable from here too
from voicefleet.tuning.objective import WORST_SCORE
from voicefleet.tuning.report import TrialRow, trial_rows, write_report
from voicefleet.tuning.space import SearchSpace
from voicefleet.tuning.trial import PlacementGroupReaper, TrialTensorBoard, trial_run_name, voice_trial

logger = logging.getLogger(__name__)

RESULT = "sweep.json"
TRIALS_DIR = "trials"  # <sweep>/trials/<trial id>/tb: each trial's TensorBoard files
TRIAL_MEMORY = 256 * 1024 * 1024  # bytes reserved by each trial's driver process
# What the registry records of the promoted round (metrics, and in its lineage): the losses and any score
PROMOTED_METRICS = ("val_objective", "val_recon", "val_ce", "val_top1", *WORST_SCORE)
# The official fine-tuning values (the training defaults): the sweep's first trial, so it never does worse.
OFFICIAL_POINT = {"sovits_lr": TrainConfig.model_fields["sovits_lr"].default,
                  "gpt_lr_ratio": TrainConfig.model_fields["gpt_lr_ratio"].default,
                  "warmup_fraction": ScheduleConfig.model_fields["warmup_fraction"].default,
                  "text_low_lr_rate": TrainConfig.model_fields["text_low_lr_rate"].default,
                  "lora_rank": TrainConfig.model_fields["lora_rank"].default}  # adapter sweeps: the nearest listed


class SweepError(RuntimeError):
    """The sweep cannot run or produced no usable trial; the message says why."""


@dataclass
class SweepResult:
    sweep_id: str
    voice: str
    sweep_dir: str
    best_trial: str
    best_round: int
    best_objective: float
    best_config: dict[str, float]
    best_metrics: dict[str, float]
    exported: dict[str, str]
    voice_version: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    report: str = ""
    metric: str = "val_objective"  # what best_objective measures

    @classmethod
    def load(cls, path: str | Path) -> "SweepResult":
        return cls(**json.loads(Path(path).read_text()))


def _official_point(space: SearchSpace) -> dict[str, float] | None:
    point = {}
    for name, r in space.dimensions().items():
        value = OFFICIAL_POINT.get(name)
        value = None if value is None else r.nearest(value)
        if value is None:
            return None
        point[name] = value
    return point


def _max_concurrent(config: SweepConfig) -> int:
    import ray

    resources = ray.cluster_resources()
    fits = math.floor(resources.get("CPU", 1) / (config.num_workers * config.cpus_per_worker))
    if config.use_gpu:
        fits = min(fits, math.floor(resources.get("GPU", 0) / (config.num_workers * config.gpus_per_worker)))
    return max(1, min(config.trials, fits))


def _trainable(config: SweepConfig, storage: str, dataset: Path, paths) -> Any:
    from ray import tune

    per_worker: dict[str, float] = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        per_worker["GPU"] = config.gpus_per_worker
    setup = {
        "sweep_id": config.sweep_id, "dataset": str(dataset), "rounds": config.rounds,
        "steps_per_round": config.steps_per_round, "min_warmup_steps": config.space.min_warmup_steps,
        "objective_clips": config.objective_clips, "max_tokens": config.max_tokens,
        "max_failures": config.max_failures, "base": config.base_train_config().model_dump(),
        "metric": config.metric, "mode": config.mode, "quality_metrics": config.quality_metrics(),
        "adapter": plan.model_dump() if (plan := config.adapter_plan()) else None,
        "pretrained": {"gpt": str(paths.gpt), "sovits_g": str(paths.sovits_g), "sovits_d": str(paths.sovits_d)},
        "train_storage": f"{storage}/sweeps/{config.sweep_id}/train",
        "scaling": {"num_workers": config.num_workers, "use_gpu": config.use_gpu,
                    "resources_per_worker": per_worker, "placement_strategy": config.placement_strategy},
    }
    # The trial itself only drives its TorchTrainer (whose controller takes no CPU either): it
    # reserves no CPU, only a little memory (Tune needs some resource); the Train workers hold
    # the CPUs/GPUs, and max_concurrent_trials keeps trials from oversubscribing the cluster.
    return tune.with_resources(tune.with_parameters(voice_trial, setup=setup), {"CPU": 0, "memory": TRIAL_MEMORY})


def run_sweep(config: SweepConfig, dataset: str | Path, pretrained: str | Path, *, resume: bool = False,
              points_to_evaluate: list[dict[str, float]] | None = None) -> SweepResult:
    """Run (or resume) a sweep to the end, promote its best trial into the registry, write the report."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    paths = find_training_pretrained(pretrained, dataset, need_discriminator=True)
    check_sovits_trainable(paths, dataset)  # every trial fine-tunes the SoVITS too
    dataset = Path(dataset).resolve()
    if not (dataset / "data").exists():
        raise FileNotFoundError(f"{dataset} is not a prepared dataset (no data/ folder); run `voicefleet prepare` first")
    storage, local = resolve_storage(config.storage_path)
    sweep_uri = f"{storage}/sweeps/{config.sweep_id}"
    out_dir = Path(sweep_uri) if local else Path(tempfile.mkdtemp()) / config.sweep_id
    if local and resume and (out_dir / RESULT).exists():
        logger.info("sweep %s already finished; returning its result", config.sweep_id)
        return SweepResult.load(out_dir / RESULT)
    exists = tune.Tuner.can_restore(sweep_uri)
    if resume and not exists:
        raise SweepError(f"there is no sweep {config.sweep_id!r} to resume in {storage}/sweeps "
                         f"(start it without --resume)")
    if not resume and exists:
        raise SweepError(f"sweep {config.sweep_id!r} already exists in {storage}/sweeps: resume it with "
                         f"--resume, or choose another --sweep-id")
    ensure_ray(log_to_driver=True)
    trainable = _trainable(config, storage, dataset, paths)
    if resume:
        logger.info("resuming sweep %s from %s", config.sweep_id, sweep_uri)
        tuner = tune.Tuner.restore(sweep_uri, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        points = list(points_to_evaluate or [])
        official = _official_point(config.space) if config.try_official_first else None
        if official is not None:
            points.insert(0, official)
        searcher = OptunaSearch(metric=config.metric, mode=config.mode, seed=config.seed,
                                points_to_evaluate=points or None)
        scheduler = ASHAScheduler(time_attr="round", metric=config.metric, mode=config.mode, max_t=config.rounds,
                                  grace_period=min(config.grace_rounds, config.rounds),
                                  reduction_factor=config.reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space=config.space.tune_space(),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=config.trials,
                                        max_concurrent_trials=config.max_concurrent or _max_concurrent(config)),
            run_config=tune.RunConfig(name=config.sweep_id, storage_path=f"{storage}/sweeps",
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[PlacementGroupReaper(),
                                                 TrialTensorBoard(str(out_dir / TRIALS_DIR))]),
        )
        if local:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "sweep_config.json").write_text(config.model_dump_json(indent=2))
    grid = tuner.fit()
    rows = trial_rows(grid, config.rounds, config.metric, config.mode)
    return finish_sweep(config, rows, dataset, paths, pretrained, out_dir, sweep_uri if not local else None)


def finish_sweep(config: SweepConfig, rows: list[TrialRow], dataset: Path, paths, pretrained: str | Path,
                 out_dir: Path, upload_to: str | None) -> SweepResult:
    """Export and register the best trial, write the report and the sweep's result."""
    import ray.train

    from voicefleet.platform.training.export import export_best
    from voicefleet.platform.voices import register_trained_voice

    out_dir.mkdir(parents=True, exist_ok=True)
    scored = [r for r in rows if r.best_objective is not None and r.best_checkpoint]
    if not scored:
        errors = "; ".join(f"{r.trial_id}: {r.error}" for r in rows if r.error) or "no trial reported a result"
        write_report(config, rows, out_dir, best=None)
        raise SweepError(f"sweep {config.sweep_id} has no usable trial ({errors})")
    sign = 1 if config.mode == "min" else -1
    best = min(scored, key=lambda r: (sign * r.best_objective, r.trial_id))
    # Tune reports checkpoint paths without their scheme: on object storage, pair it with the filesystem
    filesystem = pafs.FileSystem.from_uri(upload_to)[0] if upload_to else None
    checkpoint = ray.train.Checkpoint(best.best_checkpoint, filesystem=filesystem)
    run_name = trial_run_name(config.sweep_id, best.trial_id)
    total = config.rounds * config.steps_per_round
    plan = config.adapter_plan()
    configs = stage_configs(config.base_train_config().model_copy(update={"run_name": run_name}), best.params, total,
                            config.space.min_warmup_steps, plan)
    export_dir = out_dir / "best"
    export_dir.mkdir(exist_ok=True)
    if plan is not None:  # adapter files are named after the run alone: one name per stage, or the GPT's replaces
        configs = {stage: c.model_copy(update={"run_name": f"{run_name}-{stage}"}) for stage, c in configs.items()}
    exported = {stage: str(export_best(configs[stage], checkpoint, paths, export_dir)) for stage in STAGES}
    importances = write_report(config, rows, out_dir, best=best)
    metrics = {k: v for k, v in best.best_metrics.items() if k in PROMOTED_METRICS}
    record = register_trained_voice(
        config.voice, config.storage_path, dataset, pretrained, sovits=exported["sovits"], gpt=exported["gpt"],
        metrics=metrics, lineage={"sweep": config.sweep_id, "trial": best.trial_id, "round": best.best_round,
                                  "config": best.params, "sovits_run": run_name, "gpt_run": run_name,
                                  "metric": config.metric, "metrics": metrics,
                                  **({"adapter": plan.describe(best.params)} if plan else {})})
    result = SweepResult(
        sweep_id=config.sweep_id, voice=config.voice, sweep_dir=str(upload_to or out_dir), best_trial=best.trial_id,
        best_round=best.best_round, best_objective=best.best_objective, best_config=best.params,
        best_metrics=best.best_metrics, exported=exported, voice_version=record.version,
        trials=[r.to_dict() for r in rows], importances=importances, report=str(out_dir / "report.md"),
        metric=config.metric)
    (out_dir / RESULT).write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False, default=float))
    if upload_to:
        fs, root = pafs.FileSystem.from_uri(upload_to)
        pafs.copy_files(str(out_dir), root, destination_filesystem=fs)
    logger.info("sweep %s: best trial %s (round %d, %s %.4f) registered as voice %s v%d", config.sweep_id,
                best.trial_id, best.best_round, config.metric, best.best_objective, config.voice, record.version)
    return result

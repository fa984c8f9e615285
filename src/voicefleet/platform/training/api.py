"""Fine-tune one stage on Ray Train and hand back what a user looks at.

    train_stage(TrainConfig(stage="sovits", run_name="alice-s2"), dataset_dir, pretrained_dir)

The driver builds a `TorchTrainer` (N workers, gloo on CPU or nccl on GPU, same code) with a
`FailureConfig` so a crashed worker group restarts from the last checkpoint, and keeps the best
checkpoints by validation reconstruction loss. Re-running the same run name resumes the run (or,
once it finished, returns its result without training again); a new name starts fresh.

Outputs, under `<storage>/<run_name>/voicefleet/`: `metrics.csv`, `curves.png` (losses, learning
rate and gradient norms, with the monitor's verdicts marked), TensorBoard event files in `tb/`,
`report.json` (result, verdicts, the recipe and every optimizer/schedule setting), `report.md` and the best weights
exported in the official format (`<run_name>.pth` for SoVITS, `<run_name>.ckpt` for GPT; an adapter
run: `<run_name>.lora.safetensors`).

With `eval_list`, checkpoints are also scored on that list while the run trains (speaker
similarity, DNSMOS, WER: `voicefleet.platform.training.quality`), the scores join the metrics,
TensorBoard and the curves, each scoring's own report lands in `quality/step_NNNNNNN/`, and
`keep_best_by` picks the exported checkpoint by val_recon or by a score; `report.md` says which
and why.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from voicefleet.models.checkpoint.files import atomic_file
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.cluster import ensure_ray
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training import quality
from voicefleet.platform.training.checkpointing import load_state
from voicefleet.platform.training.export import (OFFICIAL_FIXED_SOVITS_SIZES, export_best,  # noqa: F401 - re-exported
                                                 official_size_mismatches, warn_if_not_official_size)
from voicefleet.platform.training.worker import PID_DIR_ENV, train_loop_per_worker

logger = logging.getLogger(__name__)

REPORT = "report.json"
MAX_REASON_CHARS = 500  # of a failure's message; Ray's own (a dead actor's) run to many lines of ids


class TrainingError(RuntimeError):
    """Training could not finish (all retries failed), or cannot start on this cluster; the message says why."""


@dataclass
class TrainResult:
    run_name: str
    stage: str
    output_dir: str
    exported: str
    steps: int
    best_step: int
    best_val_recon: float
    final_metrics: dict[str, Any]
    verdicts: list[str] = field(default_factory=list)
    stopped_early: bool = False
    resumed_at_steps: list[int] = field(default_factory=list)  # worker-group restarts and re-runs
    recipe: str = "voicefleet"
    keep_best_by: str = "val_recon"
    selection: str = ""  # which checkpoint was exported, and why
    scores: list[dict[str, Any]] = field(default_factory=list)  # each scored checkpoint's summary, with its step
    settings: dict[str, Any] = field(default_factory=dict)  # TrainConfig.settings(): every optimizer/schedule value
    config: dict[str, Any] = field(default_factory=dict)  # the run's TrainConfig, as given

    @classmethod
    def load(cls, path: str | Path) -> "TrainResult":
        return cls(**json.loads(Path(path).read_text()))


def resolve_storage(path: str) -> tuple[str, bool]:
    """(storage path for Ray, whether it is local)."""
    if "://" in path and not path.startswith("file://"):
        return path, False
    local = Path(path.removeprefix("file://")).expanduser().resolve()
    local.mkdir(parents=True, exist_ok=True)
    return str(local), True


def check_gpus(requested: int, available: float, *, can_autoscale: bool) -> str | None:
    """Whether a cluster with `available` GPUs can place workers that ask for `requested` in all.

    Returns None when it can. When it cannot, Ray Train would wait for the GPUs forever (logging
    a startup timeout every minute), so: a cluster that may add GPU nodes (an autoscaler) gets a
    warning to log; a fixed one (such as the local instance `ray.init()` starts) raises
    `TrainingError` saying what to do.
    """
    if requested <= available:
        return None
    short = (f"{requested} GPU{'' if requested == 1 else 's'} asked for (one per worker) but the Ray cluster has "
             f"{available:g}")
    if can_autoscale:
        return f"{short}; the run waits until the autoscaler adds GPU nodes"
    raise TrainingError(f"{short} and cannot add any: drop --gpu (use_gpu) to train on CPU, or start Ray on "
                        f"machines with GPUs and connect to it (--address)")


def _cluster_is_fixed() -> bool:
    """Whether this process started the Ray instance itself (`ray.init()` with no cluster to join).

    Such an instance has no autoscaler, so its resources never grow. Anything else (a cluster
    joined by address, `ray start`, Ray Client) may autoscale, and we cannot tell from here.
    """
    try:
        from ray._private import worker

        node = worker._global_node
        return node is not None and node.is_head()
    except Exception:  # noqa: BLE001 - a private API; if it moves, assume the cluster may grow (warn, never refuse)
        return False


def failure_reason(error: BaseException) -> str:
    """One line saying why a Ray Train run failed: the first failing worker's own exception.

    Ray Train 2 raises `WorkerGroupError` (each failed rank's exception in `worker_failures`) or
    `ControllerError` (`controller_failure`); anything else is followed down its cause chain.
    """
    where = ""
    failures = getattr(error, "worker_failures", None)
    if failures:
        rank = min(failures)
        others = len(failures) - 1
        where = f" (worker {rank}" + (f"; {others} more worker{'s' if others > 1 else ''} failed)" if others else ")")
        error = failures[rank]
    elif isinstance(getattr(error, "controller_failure", None), BaseException):
        error = error.controller_failure
    else:
        while error.__cause__ is not None:
            error = error.__cause__
    while isinstance(getattr(error, "cause", None), BaseException):  # ray.exceptions.RayTaskError
        error = error.cause
    text = " ".join(str(error).split())
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}{': ' + text if text else ''}{where}"


def find_training_pretrained(pretrained: str | Path, dataset: str | Path, *, need_discriminator: bool):
    """The pretrained folder's files of the version the dataset was prepared for (its manifest's
    `model_version`), so a folder holding several versions trains the one its data belongs to;
    the folder's default version when the dataset names none or the folder lacks it (then
    `check_sovits_trainable` explains the mismatch)."""
    from voicefleet.models.pretrained import PretrainedError
    from voicefleet.platform.data.manifest import read_manifest

    manifest = read_manifest(Path(dataset)) if Path(dataset).is_dir() else None
    version = (manifest or {}).get("model_version")
    if version is not None:
        try:
            return find_pretrained(pretrained, need_discriminator=need_discriminator, version=version)
        except PretrainedError:
            pass
    return find_pretrained(pretrained, need_discriminator=need_discriminator)


def check_sovits_trainable(paths, dataset: str | Path | None = None) -> None:
    """Refuse, in one line, a SoVITS fine-tune whose dataset does not match the pretrained version.

    A v2Pro/v2ProPlus generator's training forward takes each clip's speaker-verification
    embedding, which `prepare` computes only with a v2Pro/v2ProPlus pretrained folder; a dataset
    prepared with one holds it and was tokenised by that folder's SoVITS, so a v2 folder is refused
    for it too. Without `dataset` (or for a folder that is not a dataset yet) nothing is checked.
    """
    from voicefleet.platform.data.manifest import read_manifest
    from voicefleet.platform.data.store import has_speaker_embedding

    manifest = read_manifest(Path(dataset)) if dataset is not None and Path(dataset).is_dir() else None
    if manifest is None:
        return
    # datasets written before the manifest named the version: told apart by the embedding column
    fallback = "v2Pro/v2ProPlus" if has_speaker_embedding(manifest) else "v2"
    prepared_with = manifest.get("model_version") or fallback
    pro = paths.version != "v2"
    if pro and not has_speaker_embedding(manifest):
        raise TrainingError(f"the dataset {dataset} was prepared with a {prepared_with} pretrained folder and has no "
                            f"speaker-verification embeddings, which a {paths.version} SoVITS trains on; prepare it "
                            f"again with the {paths.version} pretrained folder ({paths.root})")
    if not pro and has_speaker_embedding(manifest):
        raise TrainingError(f"the dataset {dataset} was prepared with a {prepared_with} pretrained folder but "
                            f"{paths.sovits_g} is v2; train from the {prepared_with} folder, or prepare the "
                            "dataset again with the v2 pretrained folder")


def _check_stage_builds(config: TrainConfig, pretrained: dict[str, str]) -> None:
    """Build the stage once here, on CPU, exactly as every worker will.

    A pretrained file of the wrong kind (an exported voice, a v2Pro file, ...) then fails once,
    before Ray starts anything, with its own message, instead of failing inside every worker and
    being retried `max_failures` times. The models are dropped afterwards.
    """
    import torch

    from voicefleet.platform.training.worker import build_stage

    build_stage(config.model_copy(update={"precision": "fp32"}), pretrained, torch.device("cpu"),
                lambda model, **_: model)


def train_stage(config: TrainConfig, dataset: str | Path, pretrained: str | Path) -> TrainResult:
    """Run (or resume) one fine-tuning run; returns its result once finished.

    Raises `TrainingError` (one line: the run and the first failing worker's exception) when the
    run fails for good, or at once when it asks for GPUs a fixed cluster does not have.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    paths = find_training_pretrained(pretrained, dataset, need_discriminator=config.stage == "sovits")
    if config.stage == "sovits":
        check_sovits_trainable(paths, dataset)
    dataset = Path(dataset).resolve()
    if not dataset.exists():
        raise FileNotFoundError(f"prepared dataset {dataset} does not exist (run `voicefleet prepare` first)")
    if config.eval_list is not None:
        eval_list = Path(config.eval_list).expanduser()
        if "://" not in config.eval_list:
            if not eval_list.is_file():
                raise FileNotFoundError(f"eval list {eval_list} not found")
            # absolute: the scoring task runs in another working directory
            config = config.model_copy(update={"eval_list": str(eval_list.resolve())})
    storage, local = resolve_storage(config.storage_path)
    out_dir = Path(storage) / config.run_name / "voicefleet" if local else Path(tempfile.mkdtemp()) / "voicefleet"
    if local and (out_dir / REPORT).exists():
        logger.info("run %s already finished; returning its result", config.run_name)
        return TrainResult.load(out_dir / REPORT)
    # absolute paths (find_pretrained resolves them): workers run in another working directory
    files = {"gpt": str(paths.gpt), "sovits_g": str(paths.sovits_g), "sovits_d": str(paths.sovits_d)}
    _check_stage_builds(config, files)
    scoring = quality.prepare_eval(config, dataset, pretrained, storage) if config.eval_list else None
    ensure_ray(log_to_driver=True)
    if config.use_gpu:
        waiting = check_gpus(config.num_workers, ray.cluster_resources().get("GPU", 0),
                             can_autoscale=not _cluster_is_fixed())
        if waiting:
            logger.warning("run %s: %s", config.run_name, waiting)

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(), "dataset": str(dataset), "pretrained": files},
        validation_config=quality.validation_config(scoring, config.eval_cpus) if scoring else None,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     placement_strategy=config.placement_strategy,
                                     resources_per_worker={"CPU": config.cpus_per_worker,
                                                           **({"GPU": 1} if config.use_gpu else {})}),
        run_config=RunConfig(
            name=config.run_name, storage_path=storage,
            worker_runtime_env={"env_vars": {PID_DIR_ENV: os.environ[PID_DIR_ENV]}} if PID_DIR_ENV in os.environ else None,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints,
                                               checkpoint_score_attribute=config.keep_best_by,
                                               checkpoint_score_order="min" if config.keep_best_by == "val_recon"
                                               else "max")),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as e:  # Ray Train 2 raises instead of returning a result with .error
        raise TrainingError(f"run {config.run_name} failed: {failure_reason(e)}") from e
    if result.error is not None:
        raise TrainingError(f"run {config.run_name} failed: {failure_reason(result.error)}")
    if result.checkpoint is None or not result.best_checkpoints:
        raise TrainingError(f"run {config.run_name} wrote no checkpoint")
    # the whole history, across worker restarts, travels in the last checkpoint
    last = load_state(result.checkpoint)
    rows, resumes = last["history"], last["resumes"]
    scores = quality.read_scores(storage, config.run_name) if config.eval_list else {}
    for row in rows:
        row.update({f"{quality.PREFIX}{k}": v for k, v in scores.get(int(row["step"]), {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"})
    best_ckpt, best_metrics, selection = choose_checkpoint(config, result.best_checkpoints, rows)
    errors = quality.read_errors(storage, config.run_name) if config.eval_list else {}
    for step, error in errors.items():
        logger.warning("run %s: the checkpoint of step %d was not scored: %s", config.run_name, step, error)
    if errors and config.keep_best_by != "val_recon" and not _finite(best_metrics.get(config.keep_best_by)):
        first = next(iter(errors.items()))
        selection += f" (scoring failed, e.g. at step {first[0]}: {first[1][:MAX_REASON_CHARS]})"
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = [v for row in rows for v in json.loads(row.get("verdicts") or "[]")]
    write_metrics_csv(rows, out_dir / "metrics.csv")
    write_tensorboard(rows, out_dir / "tb")
    plot_curves(rows, verdicts, out_dir / "curves.png", config.stage, chosen=int(best_metrics["step"]))
    exported = export_best(config, best_ckpt, paths, out_dir)
    final = {k: v for k, v in rows[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    res = TrainResult(
        run_name=config.run_name, stage=config.stage, output_dir=str(out_dir), exported=str(exported),
        steps=int(rows[-1]["step"]), best_step=int(best_metrics["step"]),
        best_val_recon=float(best_metrics["val_recon"]), final_metrics=final,
        verdicts=[f"step {v['step']}: {v['message']}" for v in verdicts],
        stopped_early=bool(rows[-1].get("stop", False)), resumed_at_steps=list(resumes), recipe=config.recipe,
        keep_best_by=config.keep_best_by, selection=selection,
        scores=[{"step": step, **summary} for step, summary in scores.items()],
        settings=config.settings(), config=config.model_dump(mode="json"))
    write_run_report(res, out_dir / "report.md")
    # written last and in one rename: its presence means "finished", so a driver killed while
    # writing it must leave none (a re-run then resumes) rather than a torn one
    with atomic_file(out_dir / REPORT) as tmp:
        tmp.write_text(json.dumps(asdict(res), indent=2, ensure_ascii=False, default=float))
    if not local:
        fs, root = pafs.FileSystem.from_uri(storage)
        pafs.copy_files(str(out_dir), f"{root}/{config.run_name}/voicefleet", destination_filesystem=fs)
    logger.info("run %s finished at step %d; exported step %d (%s): %s", config.run_name, res.steps, res.best_step,
                selection, exported)
    return res


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def choose_checkpoint(config: TrainConfig, kept: list[tuple[Any, dict[str, Any]]],
                      rows: list[dict[str, Any]]) -> tuple[Any, dict[str, Any], str]:
    """(checkpoint, its metrics, why) of the checkpoint to export, by `config.keep_best_by`.

    `kept` is Ray Train's kept checkpoints with their metrics (eval-list scores merged in by the
    scoring task); `rows` the run's evaluations. A score-based choice that finds no scored
    checkpoint (every scoring failed) falls back to the lowest val_recon and says so.
    """
    by_recon = min(kept, key=lambda cm: cm[1].get("val_recon", math.inf))
    recon_line = f"lowest val_recon ({by_recon[1]['val_recon']:.4g}) of the {len(kept)} kept checkpoints"
    if config.keep_best_by == "val_recon":
        return by_recon[0], by_recon[1], recon_line
    key = config.keep_best_by
    scored = [cm for cm in kept if _finite(cm[1].get(key))]
    if not scored:
        return by_recon[0], by_recon[1], f"no kept checkpoint has a {key} score, so the {recon_line}"
    checkpoint, metrics = max(scored, key=lambda cm: (cm[1][key], -cm[1]["step"]))
    why = (f"highest {key} ({metrics[key]:.4g}) of the {len(scored)} kept scored checkpoints, on "
           f"{int(metrics.get('eval_n', 0))} lines of {Path(config.eval_list or '').name}")
    recon_rows = [r for r in rows if _finite(r.get("val_recon"))]
    if recon_rows:
        lowest = min(recon_rows, key=lambda r: r["val_recon"])
        if int(lowest["step"]) != int(metrics["step"]):
            why += f"; the lowest val_recon was at step {int(lowest['step'])} ({lowest['val_recon']:.4g})"
    return checkpoint, metrics, why


def write_run_report(result: TrainResult, path: Path) -> None:
    """report.md: what was trained, which checkpoint was exported and why, the scores, the curves."""
    lines = [f"# Run {result.run_name} ({result.stage}, recipe {result.recipe})", "",
             f"{result.steps} optimizer steps{' (stopped early)' if result.stopped_early else ''}.", "",
             f"**Exported:** step {result.best_step}, kept by `{result.keep_best_by}`: {result.selection}.", "",
             "![curves](curves.png)", ""]
    if result.scores:
        fields = [f for f in ("speaker_similarity", "speaker_similarity_to_ref", "dnsmos_ovrl", "wer", "rtf")
                  if any(_finite(s.get(f)) for s in result.scores)]
        lines += ["## Scored checkpoints", "", "| step | " + " | ".join(fields) + " | report |",
                  "|---|" + "---|" * (len(fields) + 1)]
        for s in result.scores:
            cells = [f"{s[f]:.3f}" if _finite(s.get(f)) else "-" for f in fields]
            mark = " (exported)" if s["step"] == result.best_step else ""
            lines.append(f"| {s['step']}{mark} | " + " | ".join(cells) +
                         f" | [report]({quality.QUALITY_DIR}/{quality.step_dir(s['step'])}/report.md) |")
        lines += ["", "Scores come from synthesising the eval list's lines with this stage's checkpoint and the "
                  "other stage's pretrained weights (seed 0); see docs/evaluation.md for what each measures.", ""]
    if result.verdicts:
        lines += ["## Verdicts", ""] + [f"- {v}" for v in result.verdicts] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import csv

    keys = sorted({k for r in rows for k in r if k != "verdicts"}, key=lambda k: (k != "step", k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows([{k: r.get(k, "") for k in keys} for r in rows])


def write_tensorboard(rows: list[dict[str, Any]], folder: Path) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for row in rows:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step" \
                        and math.isfinite(value):
                    writer.add_scalar(key.replace("_", "/", 1), value, int(row["step"]))
            verdicts = json.loads(row.get("verdicts") or "[]")
            if verdicts:  # the monitor's verdicts, as text at their step
                writer.add_text("verdicts", "\n\n".join(v["message"] for v in verdicts), int(row["step"]))


CURVES = {
    "sovits": [("validation reconstruction (mel L1)", ["val_recon"]), ("training mel loss (x45)", ["train_mel"]),
               ("KL", ["train_kl"]),
               ("adversarial", ["train_gen", "train_disc", "train_fm"]), ("learning rate", ["lr"]),
               ("gradient norm", ["train_grad_norm_g", "train_grad_norm_d"])],
    "gpt": [("cross-entropy per target", ["train_ce", "val_ce"]),
            ("accuracy", ["train_top1", "val_top1", "train_top3"]),
            ("learning rate", ["lr"]), ("gradient norm", ["train_grad_norm"])],
}


# Eval-list scores (`quality`), shown for either stage when the run scored checkpoints
QUALITY_CURVES = [("speaker similarity (eval list)", ["eval_speaker_similarity", "eval_speaker_similarity_to_ref"]),
                  ("DNSMOS (eval list)", ["eval_dnsmos_ovrl", "eval_dnsmos_sig"]), ("WER (eval list)", ["eval_wer"])]


def plot_curves(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], path: Path, stage: str,
                chosen: int | None = None) -> None:
    """One panel per quantity over steps (the eval-list scores beside the losses when there are
    any); dashed lines mark where the monitor gave a verdict, a green line the exported checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = CURVES[stage] + [(title, keys) for title, keys in QUALITY_CURVES
                              if any(_finite(r.get(k)) for r in rows for k in keys)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=True)
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if _finite(r.get(key))]
            if points:
                ax.plot(*zip(*points), marker=".", label=key)
        for v in verdicts:
            ax.axvline(v["step"], color="red" if v["kind"] in ("kl_rising", "disc_collapse", "early_stop",
                                                               "gen_losing") else "grey",
                       linestyle="--", linewidth=0.8)
        if chosen is not None:
            ax.axvline(chosen, color="green", linewidth=1.2, alpha=0.7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("step" + (f" (green: exported checkpoint, step {chosen})" if chosen is not None else ""))
    if verdicts:
        fig.text(0.01, 0.005, "; ".join(f"{v['step']}: {v['kind']}" for v in verdicts[:8]), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

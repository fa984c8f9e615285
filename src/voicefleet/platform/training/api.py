"""Fine-tune one stage on Ray Train and hand back what a user looks at.

    train_stage(TrainConfig(stage="sovits", run_name="alice-s2"), dataset_dir, pretrained_dir)

The driver builds a `TorchTrainer` (N workers, gloo on CPU or nccl on GPU, same code) with a
`FailureConfig` so a crashed worker group restarts from the last checkpoint, and keeps the best
checkpoints by validation reconstruction loss. Re-running the same run name resumes the run (or,
once it finished, returns its result without training again); a new name starts fresh.

Outputs, under `<storage>/<run_name>/voicefleet/`: `metrics.csv`, `curves.png` (losses, learning
rate and gradient norms, with the monitor's verdicts marked), TensorBoard event files in `tb/`,
`report.json` (result, verdicts, the recipe and every optimizer/schedule setting) and the best weights exported in the official format
(`<run_name>.pth` for SoVITS, `<run_name>.ckpt` for GPT).
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

from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.cluster import ensure_ray
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.checkpointing import load_state
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


def check_sovits_trainable(paths) -> None:
    """Refuse, in one line, to fine-tune a SoVITS from a v2Pro/v2ProPlus pretrained folder.

    Their training forward needs each clip's speaker-verification embedding, which `prepare`
    does not compute yet; they synthesise, serve and export, and their GPT fine-tunes as v2's.
    """
    if paths.version != "v2":
        raise TrainingError(f"fine-tuning a {paths.version} SoVITS is not available yet (only v2 SoVITS models "
                            f"fine-tune): {paths.sovits_g} is {paths.version}; train from a v2 pretrained folder "
                            f"(gsv-v2final-pretrained/), or synthesise and serve the {paths.version} weights as "
                            "they are")


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

    paths = find_pretrained(pretrained, need_discriminator=config.stage == "sovits")
    if config.stage == "sovits":
        check_sovits_trainable(paths)
    dataset = Path(dataset).resolve()
    if not dataset.exists():
        raise FileNotFoundError(f"prepared dataset {dataset} does not exist (run `voicefleet prepare` first)")
    storage, local = resolve_storage(config.storage_path)
    out_dir = Path(storage) / config.run_name / "voicefleet" if local else Path(tempfile.mkdtemp()) / "voicefleet"
    if local and (out_dir / REPORT).exists():
        logger.info("run %s already finished; returning its result", config.run_name)
        return TrainResult.load(out_dir / REPORT)
    # absolute paths (find_pretrained resolves them): workers run in another working directory
    files = {"gpt": str(paths.gpt), "sovits_g": str(paths.sovits_g), "sovits_d": str(paths.sovits_d)}
    _check_stage_builds(config, files)
    ensure_ray(log_to_driver=True)
    if config.use_gpu:
        waiting = check_gpus(config.num_workers, ray.cluster_resources().get("GPU", 0),
                             can_autoscale=not _cluster_is_fixed())
        if waiting:
            logger.warning("run %s: %s", config.run_name, waiting)

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(), "dataset": str(dataset), "pretrained": files},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     placement_strategy=config.placement_strategy,
                                     resources_per_worker={"CPU": config.cpus_per_worker,
                                                           **({"GPU": 1} if config.use_gpu else {})}),
        run_config=RunConfig(
            name=config.run_name, storage_path=storage,
            worker_runtime_env={"env_vars": {PID_DIR_ENV: os.environ[PID_DIR_ENV]}} if PID_DIR_ENV in os.environ else None,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints,
                                               checkpoint_score_attribute="val_recon",
                                               checkpoint_score_order="min")),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as e:  # Ray Train 2 raises instead of returning a result with .error
        raise TrainingError(f"run {config.run_name} failed: {failure_reason(e)}") from e
    if result.error is not None:
        raise TrainingError(f"run {config.run_name} failed: {failure_reason(result.error)}")
    if result.checkpoint is None or not result.best_checkpoints:
        raise TrainingError(f"run {config.run_name} wrote no checkpoint")
    best_ckpt, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1].get("val_recon", math.inf))
    # the whole history, across worker restarts, travels in the last checkpoint
    last = load_state(result.checkpoint)
    rows, resumes = last["history"], last["resumes"]
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = [v for row in rows for v in json.loads(row.get("verdicts") or "[]")]
    write_metrics_csv(rows, out_dir / "metrics.csv")
    write_tensorboard(rows, out_dir / "tb")
    plot_curves(rows, verdicts, out_dir / "curves.png", config.stage)
    exported = export_best(config, best_ckpt, paths, out_dir)
    final = {k: v for k, v in rows[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    res = TrainResult(
        run_name=config.run_name, stage=config.stage, output_dir=str(out_dir), exported=str(exported),
        steps=int(rows[-1]["step"]), best_step=int(best_metrics["step"]),
        best_val_recon=float(best_metrics["val_recon"]), final_metrics=final,
        verdicts=[f"step {v['step']}: {v['message']}" for v in verdicts],
        stopped_early=bool(rows[-1].get("stop", False)), resumed_at_steps=list(resumes), recipe=config.recipe,
        settings=config.settings(), config=config.model_dump(mode="json"))
    (out_dir / REPORT).write_text(json.dumps(asdict(res), indent=2, ensure_ascii=False, default=float))
    if not local:
        fs, root = pafs.FileSystem.from_uri(storage)
        pafs.copy_files(str(out_dir), f"{root}/{config.run_name}/voicefleet", destination_filesystem=fs)
    logger.info("run %s finished at step %d; best val_recon %.4g at step %d; exported %s", config.run_name,
                res.steps, res.best_val_recon, res.best_step, exported)
    return res


# What GPT-SoVITS's own SynthesizerTrn builds whatever its config says (GPT_SoVITS/module/models.py,
# mrte_model.py): the text encoder's MRTE() takes its default widths (192 in and out, 512 hidden,
# 4 heads) and adds the 512-wide style vector to its hidden state; HuBERT width, codebook, style
# encoder input and flow sizes are constants. A voice of other sizes loads here but never there.
OFFICIAL_FIXED_SOVITS_SIZES = {"hidden_channels": 192, "mrte_hidden": 512, "mrte_heads": 4, "gin_channels": 512,
                               "ssl_dim": 768, "codebook_size": 1024, "style_input_channels": 704,
                               "flow_layers": 4, "flow_wavenet_layers": 4, "wavenet_kernel_size": 5}


# v2Pro/v2ProPlus: gin is 1024 and the speaker-verification embedding 20480 wide
OFFICIAL_FIXED_PRO_SIZES = {**OFFICIAL_FIXED_SOVITS_SIZES, "gin_channels": 1024, "sv_embedding_dim": 20480}


def official_size_mismatches(sovits_config) -> list[str]:
    """The sizes of a `SoVITSConfig` that GPT-SoVITS's own code cannot build, as "name=ours (official N)";
    empty when its WebUI and api_v2.py can load the voice."""
    fixed = OFFICIAL_FIXED_PRO_SIZES if sovits_config.is_pro else OFFICIAL_FIXED_SOVITS_SIZES
    return [f"{name}={getattr(sovits_config, name)} (official {value})"
            for name, value in fixed.items() if getattr(sovits_config, name) != value]


def warn_if_not_official_size(sovits_config, path: Path | str) -> None:
    """Log a warning when a SoVITS export at `path` has sizes GPT-SoVITS's own loader cannot build."""
    mismatches = official_size_mismatches(sovits_config)
    if mismatches:
        logger.warning("%s is in the official format but not of official size (%s): voicefleet loads it, GPT-SoVITS's "
                       "WebUI and api_v2.py cannot (they build the text encoder's MRTE at fixed widths)",
                       path, ", ".join(mismatches))


def export_best(config: TrainConfig, checkpoint, paths, out_dir: Path) -> Path:
    """The best checkpoint's weights in the official export format."""
    from voicefleet.models.checkpoint.gpt_io import load_gpt, save_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export
    from voicefleet.models.pretrained import official_s1_config

    state = load_state(checkpoint)
    epoch, step = state["epoch"], state["step"]
    if config.stage == "sovits":
        loaded = load_sovits(paths.sovits_g)
        loaded.model.load_state_dict(state["models"]["generator"])
        hparams = loaded.hparams
        if hparams is not None:
            hparams = {**hparams, "train": {**hparams.get("train", {}), "learning_rate": config.sovits_lr,
                                            "text_low_lr_rate": config.text_low_lr_rate,
                                            "batch_size": config.batch_size, "epochs": config.epochs},
                       "name": config.run_name}
        exported = save_sovits_export(loaded.model, out_dir / f"{config.run_name}.pth", hparams=hparams,
                                      info=f"{epoch}epoch_{step}iteration", name=config.run_name, overwrite=True)
        warn_if_not_official_size(loaded.config, exported)
        return exported
    model, gpt_cfg, info = load_gpt(paths.gpt)
    model.load_state_dict(state["models"]["gpt"])
    official = info.config if isinstance(info.config, dict) and "model" in info.config else official_s1_config(gpt_cfg)
    official = {**official, "train": {**official.get("train", {}), "exp_name": config.run_name,
                                      "epochs": config.epochs, "batch_size": config.batch_size}}
    return save_gpt(model, official, out_dir / f"{config.run_name}.ckpt", info=f"GPT-e{epoch}", overwrite=True)


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


CURVES = {
    "sovits": [("validation reconstruction (mel L1)", ["val_recon"]), ("training mel loss (x45)", ["train_mel"]),
               ("KL", ["train_kl"]),
               ("adversarial", ["train_gen", "train_disc", "train_fm"]), ("learning rate", ["lr"]),
               ("gradient norm", ["train_grad_norm_g", "train_grad_norm_d"])],
    "gpt": [("cross-entropy per target", ["train_ce", "val_ce"]),
            ("accuracy", ["train_top1", "val_top1", "train_top3"]),
            ("learning rate", ["lr"]), ("gradient norm", ["train_grad_norm"])],
}


def plot_curves(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], path: Path, stage: str) -> None:
    """One panel per quantity over steps; dashed lines mark where the monitor gave a verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = CURVES[stage]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=True)
    steps = [r["step"] for r in rows]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            values = [r.get(key, math.nan) for r in rows]
            if any(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                ax.plot(steps, values, marker=".", label=key)
        for v in verdicts:
            ax.axvline(v["step"], color="red" if v["kind"] in ("kl_rising", "disc_collapse", "early_stop",
                                                               "gen_losing") else "grey",
                       linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("step")
    if verdicts:
        fig.text(0.01, 0.005, "; ".join(f"{v['step']}: {v['kind']}" for v in verdicts[:8]), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

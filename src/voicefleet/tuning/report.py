"""What a sweep leaves for people: the trials table, parameter importances and two plots.

Written into the sweep's folder: `trials.csv` (one row per trial; an adapter sweep's rows carry each
trial's LoRA rank and alpha), `importances.json` (Optuna's
fANOVA importance of each searched dimension for the best objective a trial reached),
`objective_per_trial.png` (the objective after every round, one line per trial; dashed where
ASHA stopped it), `ratio_vs_warmup.png` (GPT:SoVITS ratio against warm-up, coloured by the
trial's best objective) and `report.md`, which holds them together.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from voicefleet.tuning.config import SWEEP_METRICS

logger = logging.getLogger(__name__)

# a trial's folder: <trainable>_<trial id>_<index>_<params>_<date>
TRIAL_DIR = re.compile(r"_([0-9a-f]{5,12}(?:_\d{5})?)_(\d+)_")
SHOWN_METRICS = ("val_objective", "val_recon", "val_ce", "val_top1")
# Evaluation scores of the held-out syntheses, when the sweep measured them (extra columns)
SCORE_COLUMNS = ("speaker_similarity", "speaker_similarity_to_ref", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
METRIC_TEXT = {
    "val_objective": "held-out text -> GPT -> SoVITS, DTW-aligned log-mel L1 (lower is better)",
    "val_recon": "SoVITS mel L1 of held-out clips decoded from their own tokens (lower is better)",
    "speaker_similarity": "speaker similarity (cosine of speaker embeddings) of the held-out syntheses to "
                          "their recordings (higher is better)",
    "dnsmos_ovrl": "DNSMOS P.835 overall quality of the held-out syntheses, 1..5 (higher is better)",
}


@dataclass
class TrialRow:
    trial_id: str
    index: int  # order in which the searcher proposed it (1-based)
    status: str  # finished | stopped early | error
    params: dict[str, float]
    rounds: int
    objectives: list[float] = field(default_factory=list)  # the sweep's metric after each round
    best_objective: float | None = None
    best_round: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trial_id(result) -> tuple[str, int]:
    match = TRIAL_DIR.search(Path(result.path).name)
    trial_id = (result.metrics or {}).get("trial_id") or (match.group(1) if match else Path(result.path).name)
    return str(trial_id), int(match.group(2)) if match else 0


def _first_line(error: BaseException) -> str:
    """`Type: message` of the trial's own exception (a failed Train run: its first failing worker's)."""
    from voicefleet.platform.training.api import failure_reason

    while isinstance(getattr(error, "cause", None), BaseException):  # Ray's wrapper of the trial's error
        error = error.cause
    return failure_reason(error)


def trial_rows(grid, rounds: int, metric: str = "val_objective", mode: str = "min") -> list[TrialRow]:
    """One row per trial of a Tune `ResultGrid`, in trial order; `objectives` and `best_objective`
    are the values of `metric` (best: the lowest with mode "min", the highest with "max")."""
    rows = []
    sign = 1 if mode == "min" else -1
    for result in grid:
        df = result.metrics_dataframe
        records = [] if df is None or metric not in getattr(df, "columns", []) else df.to_dict("records")
        records = [r for r in records if r.get(metric) is not None and not _nan(r[metric])]
        # a restored trial may report a round again: keep the last report of each round
        by_round = {int(r["round"]): r for r in records}
        ordered = [by_round[k] for k in sorted(by_round)]
        trial_id, index = _trial_id(result)
        row = TrialRow(trial_id=trial_id, index=index, status="finished",
                       params={k: v if isinstance(v, int) else float(v) for k, v in (result.config or {}).items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)},
                       rounds=len(ordered), objectives=[float(r[metric]) for r in ordered])
        with_ckpt = [r for r in ordered if isinstance(r.get("checkpoint_path"), str)]
        if with_ckpt:
            best = min(with_ckpt, key=lambda r: (sign * float(r[metric]), int(r["round"])))
            row.best_objective, row.best_round = float(best[metric]), int(best["round"])
            row.best_metrics = {k: float(best[k]) for k in best if (k.startswith(("val_", "train_")) or
                                                                    k in SCORE_COLUMNS) and
                                isinstance(best[k], (int, float)) and not _nan(best[k])}
            row.best_checkpoint = best["checkpoint_path"]
        if result.error is not None:
            row.status, row.error = "error", _first_line(result.error)
        elif row.rounds < rounds:
            row.status = "stopped early"
        rows.append(row)
    return sorted(rows, key=lambda r: (r.index, r.trial_id))


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def importances(rows: Sequence[TrialRow], space, mode: str = "min") -> dict[str, float]:
    """fANOVA importance of each dimension for the trials' best objective ({} with < 3 scored trials)."""
    import optuna

    dims = space.dimensions()
    distributions = {name: r.distribution() for name, r in dims.items()}
    trials = []
    for row in rows:
        params = {k: row.params[k] for k in dims if k in row.params}
        if row.best_objective is None or len(params) != len(dims) or not all(
                dims[k].nearest(v) == v for k, v in params.items()):
            continue
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions, value=row.best_objective))
    if len(trials) < 3 or len({t.value for t in trials}) < 2:
        return {}
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    study.add_trials(trials)
    values = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {k: float(v) for k, v in values.items()}


def write_report(config, rows: Sequence[TrialRow], out_dir: Path, best: TrialRow | None) -> dict[str, float]:
    """trials.csv, importances.json, the plots and report.md; returns the importances."""
    dims = list(config.space.dimensions())
    plan = config.adapter_plan() if hasattr(config, "adapter_plan") else None
    # an adapter sweep: every trial's rank (searched or fixed) and the alpha its rule gives
    adapter_cols = [c for c in ("lora_rank", "lora_alpha") if plan is not None and c not in dims]
    adapter = {r.trial_id: {"lora_rank": plan.rank_of(r.params), "lora_alpha": plan.alpha_of(plan.rank_of(r.params))}
               for r in rows} if plan is not None else {}
    metric = getattr(config, "metric", "val_objective")
    mode = getattr(config, "mode", "min")
    # the best round's other losses, and its scores when the sweep measured any
    extra = ["val_objective", "val_recon", "val_ce"] + [c for c in SCORE_COLUMNS
                                                        if any(c in r.best_metrics for r in rows)]
    extra = [c for c in extra if c != metric]
    with open(out_dir / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "trial_id", "status", *dims, *adapter_cols, "rounds", "metric", "best_objective",
                         "best_round", "last_objective", *extra, "error"])
        for r in rows:
            writer.writerow([r.index, r.trial_id, r.status, *[r.params.get(d, "") for d in dims],
                             *[_fmt(adapter[r.trial_id][c]) for c in adapter_cols], r.rounds, metric,
                             _fmt(r.best_objective), r.best_round, _fmt(r.objectives[-1] if r.objectives else None),
                             *[_fmt(r.best_metrics.get(c)) for c in extra], r.error or ""])
    try:
        imp = importances(rows, config.space, mode)
    except Exception as exc:  # importances are a nicety; never lose the sweep over them
        logger.warning("parameter importances could not be computed: %s", exc)
        imp = {}
    (out_dir / "importances.json").write_text(json.dumps(imp, indent=2))
    plot_objectives(rows, out_dir / "objective_per_trial.png", best, metric)
    plot_ratio_vs_warmup(rows, out_dir / "ratio_vs_warmup.png", metric)
    lines = [f"# Sweep {config.sweep_id} (voice {config.voice})", "",
             f"{len(rows)} trials, {config.rounds} rounds of {config.steps_per_round} steps per stage; objective "
             f"`{metric}`: {METRIC_TEXT.get(metric, metric)}.", ""]
    if plan is not None:
        searched = config.space.lora_rank
        lines += [f"Adapters: every trial trains LoRA adapters over the frozen pretrained stages, rank "
                  f"{'searched among ' + searched.flag() if searched else plan.rank}, alpha {plan.alpha:g} "
                  f"({'the same at every rank' if plan.alpha_rule == 'fixed' else 'x rank / 8'}; alpha rule "
                  f"{plan.alpha_rule}), targets " + "; ".join(
                      f"{stage} {','.join(t)}" for stage, t in plan.describe({})["targets"].items()) + ".", ""]
    if any(c in SCORE_COLUMNS for c in extra):
        lines += ["Scores (speaker similarity, DNSMOS) are measured each round on the same held-out syntheses as "
                  "val_objective (see docs/evaluation.md); the columns show the best round's.", ""]
    if best is not None:
        shown = {**best.params, **adapter.get(best.trial_id, {})}
        lines += [f"**Best:** trial `{best.trial_id}`, round {best.best_round}, {metric} "
                  f"{best.best_objective:.4f}, with " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()), ""]
    counts = {s: sum(r.status == s for r in rows) for s in ("finished", "stopped early", "error")}
    lines += [", ".join(f"{n} {s}" for s, n in counts.items()), "",
              "| # | trial | status | " + " | ".join([*dims, *adapter_cols]) + f" | rounds | best {metric} | " +
              " | ".join(extra) + " | error |", "|" + "---|" * (len(dims) + len(adapter_cols) + 6 + len(extra))]
    for r in rows:
        lines.append(f"| {r.index} | {r.trial_id} | {r.status} | " + " | ".join(
            [*(_fmt(r.params.get(d)) for d in dims), *(_fmt(adapter[r.trial_id][c]) for c in adapter_cols)]) +
                     f" | {r.rounds} | {_fmt(r.best_objective)} | " +
                     " | ".join(_fmt(r.best_metrics.get(c)) for c in extra) +
                     f" | {(r.error or '').replace('|', '/')} |")
    lines += ["", "## Parameter importances (fANOVA, Optuna)", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in imp.items()] or ["- not enough scored trials (needs 3 with different "
                                                              "objectives)"]
    lines += ["", "![objective per trial](objective_per_trial.png)", "",
              "![GPT:SoVITS ratio vs warm-up](ratio_vs_warmup.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return imp


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_objectives(rows: Sequence[TrialRow], path: Path, best: TrialRow | None, metric: str = "val_objective"
                    ) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        if not r.objectives:
            continue
        is_best = best is not None and r.trial_id == best.trial_id
        ax.plot(range(1, len(r.objectives) + 1), r.objectives, marker="o",
                linestyle="--" if r.status == "stopped early" else "-", linewidth=2.5 if is_best else 1.2,
                label=f"{r.trial_id}{' (best)' if is_best else ''}{' (stopped)' if r.status == 'stopped early' else ''}")
    failed = [r.trial_id for r in rows if r.status == "error"]
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric} ({'lower' if SWEEP_METRICS.get(metric) == 'min' else 'higher'} is better)")
    ax.set_title("objective per trial" + (f"; failed: {', '.join(failed)}" if failed else ""), fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ratio_vs_warmup(rows: Sequence[TrialRow], path: Path, metric: str = "val_objective") -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    scored = [r for r in rows if r.best_objective is not None and "gpt_lr_ratio" in r.params
              and "warmup_fraction" in r.params]
    if scored:
        points = ax.scatter([r.params["gpt_lr_ratio"] for r in scored], [r.params["warmup_fraction"] for r in scored],
                            c=[r.best_objective for r in scored], cmap="viridis_r" if SWEEP_METRICS.get(metric) == "min"
                            else "viridis", s=60, edgecolors="black")
        fig.colorbar(points, ax=ax, label=f"best {metric}")
    failed = [r for r in rows if r.status == "error" and "gpt_lr_ratio" in r.params and "warmup_fraction" in r.params]
    if failed:
        ax.scatter([r.params["gpt_lr_ratio"] for r in failed], [r.params["warmup_fraction"] for r in failed],
                   marker="x", color="red", label="failed")
        ax.legend(fontsize=7)
    ax.set_xlabel("GPT:SoVITS learning-rate ratio")
    ax.set_ylabel("warm-up (fraction of steps)")
    ax.set_title("ratio vs warm-up, coloured by objective", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

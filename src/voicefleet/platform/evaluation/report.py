"""Writing an evaluation to a folder: eval.json, utterances.csv, the synthesised audio, and
report.md with PNG plots.

    out/eval.json          {"summary": {...}, "utterances": [...], "config": {...}}
    out/utterances.csv     one row per line, the same fields as eval.json's utterances
    out/audio/0000.wav     the synthesis of each line (voice and resynth modes)
    out/report.md          summary against the usual targets, plots, a listening table
    out/similarity.png     speaker-similarity distribution
    out/dnsmos.png         DNSMOS distributions

The folder is staged and renamed into place, so a crash leaves no half-written report.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voicefleet.inference.audio_io import write_audio
from voicefleet.models.checkpoint.files import atomic_folder
from voicefleet.platform.data import uris
from voicefleet.platform.evaluation.runner import Evaluation, row_fields

# The targets people quote for few-shot cloning, with the field each is read from.
TARGETS = {"dnsmos_ovrl": ("MOS >= 4.0", lambda v: v >= 4.0), "rtf": ("RTF < 0.3", lambda v: v < 0.3)}
LABELS = {
    "speaker_similarity": "speaker similarity (cosine, -1..1)",
    "speaker_similarity_to_ref": "speaker similarity to the voice's reference clip",
    "dnsmos_sig": "DNSMOS signal quality (1..5)",
    "dnsmos_bak": "DNSMOS background quality (1..5)",
    "dnsmos_ovrl": "DNSMOS overall quality (1..5)",
    "wer": "word error rate (0 = perfect)",
    "rtf": "real-time factor (synthesis s / audio s)",
    "duration_ratio": "speech duration, synthesis / real clip",
}


def write_evaluation(result: Evaluation, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write `result` into `out_dir` (which must not exist or be empty, unless `overwrite`).

    Each utterance row gets `synthesis`: the path of its audio relative to `out_dir` (voice modes).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite=overwrite)
    with atomic_folder(out_dir, replace=overwrite) as staging:
        for row, wave in zip(result.utterances, result.audio):
            row["synthesis"] = f"audio/{row['index']:04d}.wav"
            write_audio(staging / row["synthesis"], wave)
        (staging / "eval.json").write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
        _write_csv(staging / "utterances.csv", result)
        plots = _plots(staging, result.utterances)
        (staging / "report.md").write_text(_markdown(result, plots, out_dir.resolve()), encoding="utf-8")
    return out_dir


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Fail early (before any scoring) when the report would replace something not asked to."""
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not empty; pass --overwrite to replace it")


def _write_csv(path: Path, result: Evaluation) -> None:
    fields = row_fields(result.config["metrics"])
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in result.utterances:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})


def _values(rows: Sequence[dict[str, Any]], field: str) -> list[float]:
    return [float(r[field]) for r in rows if r.get(field) is not None and np.isfinite(r[field])]


def _plots(folder: Path, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    made = {}
    for name, fields, limits, target in (
            ("similarity", ("speaker_similarity", "speaker_similarity_to_ref"), (-0.1, 1.0), None),
            ("dnsmos", ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"), (1.0, 5.0), 4.0)):
        series = {f: _values(rows, f) for f in fields if _values(rows, f)}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        bins = np.linspace(*limits, 23)
        for field, values in series.items():
            ax.hist(values, bins=bins, alpha=0.55, label=f"{field} (mean {np.mean(values):.2f})")
        if target is not None:
            ax.axvline(target, color="k", linestyle="--", linewidth=1, label=f"target {target}")
        ax.set_xlim(*limits)
        ax.set_xlabel(name if name != "dnsmos" else "DNSMOS P.835 (1..5)")
        ax.set_ylabel("utterances")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=100)
        plt.close(fig)
        made[name] = f"{name}.png"
    return made


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _link(location: str, out_dir: Path) -> str:
    if uris.is_uri(location):
        return location
    return os.path.relpath(Path(location).resolve(), out_dir)


def _markdown(result: Evaluation, plots: dict[str, str], out_dir: Path) -> str:
    summary, config = result.summary, result.config
    mode = config["mode"]
    subject = f"voice `{config.get('voice')}`" if mode != "audio" else f"clips against `{config.get('against')}`"
    lines = [f"# Evaluation: {subject} ({mode} mode)", "",
             f"{summary['n']} lines of `{config.get('list', 'the list')}`; metrics: {', '.join(config['metrics'])}."]
    if mode != "audio":
        lines.append(f"Synthesis seed {config['synthesis']['seed']}; each fragment capped at "
                     f"{config['token_cap_factor']:g}x its line's real duration.")
    lines += ["", "## Summary", "", "| metric | mean | target |", "| --- | --- | --- |"]
    for field, label in LABELS.items():
        value = summary.get(field)
        if value is None:
            continue
        target = TARGETS.get(field)
        verdict = f"{target[0]}: {'met' if target[1](value) else 'not met'}" if target else ""
        lines.append(f"| {label} | {_fmt(value)} | {verdict} |")
    if summary.get("wer_note"):
        lines += ["", f"WER: {summary['wer_note']}"]
    lines += ["", "Speaker similarity is a cosine of speaker embeddings, not a calibrated verification "
              "score; DNSMOS predicts listener ratings of noisy/processed speech, not of naturalness or "
              "identity; the English recogniser is weak, so read WER relatively. See docs/evaluation.md."]
    for name, file in plots.items():
        lines += ["", f"![{name}]({file})"]
    if mode != "audio":
        lines += ["", "## Listening", "", "| # | text | real clip | synthesis | similarity | OVRL | WER |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in result.utterances:
            lines.append(f"| {row['index']} | {row['text']} | [real]({_link(row['audio'], out_dir)}) | "
                         f"[{mode}]({row.get('synthesis', '')}) | {_fmt(row.get('speaker_similarity'))} | "
                         f"{_fmt(row.get('dnsmos_ovrl'))} | {_fmt(row.get('wer'))} |")
    return "\n".join(lines) + "\n"

"""Shared helpers for benchmark scripts: machine description, tables, RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Sequence

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SUMMARY_HEADING = "## Current figures"
HISTORY_HEADING = "## History"
NEW_FILE = (f"# Benchmark results\n\n{SUMMARY_HEADING}\n\n| script | what | latest figure | machine | date | "
            f"section below |\n|---|---|---|---|---|---|\n\n{HISTORY_HEADING}\n\n"
            "Appended by the scripts in this folder; newest last.\n")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads{gpu}")


def report(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], notes: str = "") -> None:
    """Print a table and append it to RESULTS.md's history with machine and date."""
    table = Table(title=title)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {title}\n", f"{stamp} — {machine()}\n", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if notes:
        lines += ["", notes]
    append_section(RESULTS, "\n".join(lines) + "\n")
    Console().print(f"appended '{title}' ({stamp}) to {RESULTS.name}: update its row under "
                    f"'{SUMMARY_HEADING[3:]}' at the top of the file")


def append_section(path: Path, section: str) -> None:
    """Append a section to the history, below the summary table (which is kept by hand)."""
    if not path.exists():
        path.write_text(NEW_FILE)
    if HISTORY_HEADING not in path.read_text().splitlines():
        raise SystemExit(f"{path} has no '{HISTORY_HEADING}' heading: results go below it, after the summary")
    with path.open("a") as f:
        f.write(section)

"""What a voice's lineage tells a client: its kind, the lineage itself without server paths, and
the report files of the sweep and training runs it came from.

Report files are found only through the lineage of a registered voice and a fixed list of file
names per folder, so a client names a voice, a group and a file, never a path:

    <storage>/sweeps/<sweep>/{trials.csv, importances.json, report.md, *.png}   (`voicefleet tune`)
    <storage>/<run>/voicefleet/{metrics.csv, curves.png}                       (`voicefleet train`)

A lineage value that is not a plain name (a path, `..`) names no folder at all.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import pyarrow.fs as pafs

from voicefleet.platform.registry import VoiceRecord

# the files `tuning.report.write_report` and `platform.training.api.train_stage` write
SWEEP_FILES = ("trials.csv", "objective_per_trial.png", "ratio_vs_warmup.png", "importances.json", "report.md")
RUN_FILES = ("curves.png", "metrics.csv")
GROUPS = {"sweep": SWEEP_FILES, "sovits_run": RUN_FILES, "gpt_run": RUN_FILES}
MEDIA_TYPES = {".csv": "text/csv; charset=utf-8", ".png": "image/png", ".json": "application/json",
               ".md": "text/markdown; charset=utf-8"}
# sweep ids and run names: what `SweepConfig` and `TrainConfig` accept, and never `.` or `..`
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def voice_kind(record: VoiceRecord) -> str:
    lineage = record.lineage or {}
    if lineage.get("sweep"):
        return "sweep"
    if lineage.get("sovits_run") or lineage.get("gpt_run"):
        return "trained"
    if lineage.get("source") == "zero-shot upload":
        return "zero-shot"
    return "imported"


def public_lineage(record: VoiceRecord) -> dict[str, Any]:
    """The lineage a client may see: the dataset by its folder name, not where it lies on the server."""
    lineage = dict(record.lineage or {})
    if isinstance(lineage.get("dataset"), str):
        lineage["dataset"] = PurePosixPath(lineage["dataset"].replace("\\", "/")).name
    return lineage


def _plain_name(value: Any) -> str | None:
    return value if isinstance(value, str) and _NAME.match(value) and ".." not in value else None


def report_folders(lineage: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(group, name, folder relative to the storage root) for each folder the lineage names.

    A sweep's voice names the same run for both stages; it is listed once (its curves live in
    the sweep's report)."""
    folders = []
    sweep = _plain_name(lineage.get("sweep"))
    if sweep:
        folders.append(("sweep", sweep, f"sweeps/{sweep}"))
    seen = set()
    for group in ("sovits_run", "gpt_run"):
        run = _plain_name(lineage.get(group))
        if run and run not in seen:
            seen.add(run)
            folders.append((group, run, f"{run}/voicefleet"))
    return folders


class StorageFiles:
    """Read-only access to report files under the storage root (a folder or a URI)."""

    def __init__(self, storage: str):
        if "://" in storage and not storage.startswith("file://"):
            self.fs, self.root = pafs.FileSystem.from_uri(storage)
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(storage.removeprefix("file://")).expanduser().resolve())
        self.root = self.root.rstrip("/")

    def _path(self, folder: str, name: str) -> str:
        return f"{self.root}/{folder}/{name}"

    def _inside(self, path: str) -> bool:
        """False for a local file whose real location is outside the storage root (a symlink out)."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            return True
        real, root = Path(path).resolve(), Path(self.root).resolve()
        return real == root or root in real.parents

    def exists(self, folder: str, name: str) -> bool:
        path = self._path(folder, name)
        return self.fs.get_file_info(path).type == pafs.FileType.File and self._inside(path)

    def read(self, folder: str, name: str) -> bytes | None:
        """The file's bytes, or None when it is not there (or not really inside the storage root)."""
        if not self.exists(folder, name):
            return None
        with self.fs.open_input_stream(self._path(folder, name)) as f:
            return f.read()

"""A prepared dataset folder: its layout, reading it, writing it in one piece, and finding the rows
an earlier version already holds. No Ray here: `pipeline` runs the work, this keeps the results.

Layout::

    <dataset>/data/part-00000.parquet ...   kept clips, sorted by clip id (`schema.dataset_schema`)
    <dataset>/rejects.parquet               rejected list rows and why (`schema.REJECTS_SCHEMA`)
    <dataset>/manifest.json                 what the dataset holds and what it was made from (`manifest`)

A dataset is written into a staging folder beside its destination and replaces the previous
version in one rename (`atomic_folder`), so readers see either the old dataset or the new one.

While a run is under way, every finished block of rows is also kept in a journal beside the
destination (`Journal`, ``.<dataset>.journal/``), one file per block renamed into place when
complete. A run that is killed and started again takes those rows from the journal instead of
computing them again (when they were made the same way: same processing key); the journal is
removed once the dataset is in place.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from voicefleet.models.checkpoint.files import atomic_file, atomic_folder
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.data import manifest as mf
from voicefleet.platform.data import uris
from voicefleet.platform.data.config import PrepareConfig
from voicefleet.platform.data.listfile import ListEntry, ListFile
from voicefleet.platform.data.quality import RejectReason
from voicefleet.platform.data.schema import REJECTS_SCHEMA, SV_COLUMN, dataset_schema
from voicefleet.platform.data.split import VAL, assign_splits

logger = logging.getLogger(__name__)

DATA_DIR = "data"
REJECTS_FILE = "rejects.parquet"
ROWS_PER_PART = 256
ROW_GROUP_SIZE = 32  # rows per Parquet row group: small enough to stream clip by clip
# Rejected on the driver from the list alone; these are re-checked on every run, never reused.
DRIVER_REJECTS = frozenset({RejectReason.DUPLICATE.value, RejectReason.MISSING_FILE.value,
                            RejectReason.UNSUPPORTED_LANGUAGE.value, RejectReason.EMPTY_TRANSCRIPT.value})


def read_dataset(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The kept clips of a prepared dataset as one table (sorted by clip id, as written)."""
    out_dir = Path(out_dir)
    manifest = mf.read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"{out_dir} is not a prepared dataset (no {mf.MANIFEST})")
    schema = dataset_schema(manifest["config"]["audio_dtype"], speaker_embedding=has_speaker_embedding(manifest))
    tables = [pq.read_table(out_dir / p, columns=columns) for p in manifest["files"]["data"]]
    if not tables:
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    return pa.concat_tables(tables)


def has_speaker_embedding(manifest: dict) -> bool:
    """Whether a dataset (its manifest) holds the `sv_emb` column (prepared with a v2Pro* folder)."""
    return bool(manifest.get("schema", {}).get("sv_embedding", False))


def read_rejects(out_dir: str | Path) -> pa.Table:
    return pq.read_table(Path(out_dir) / REJECTS_FILE)


def check_destination(folder: Path, list_location: str, entries: tuple[ListEntry, ...], what: str, *,
                      need_manifest: bool = True) -> None:
    """Refuse a destination that is a file, a foreign non-empty folder, or that holds any input file."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{what} {folder} exists and is not a folder")
    inputs = [list_location] + [e.audio for e in entries]
    for location in inputs:
        if uris.is_uri(location):
            continue
        path = Path(location).absolute()
        if path == folder or folder in path.parents:
            raise FileExistsError(f"{what} {folder} contains the input file {location}; it is replaced as a "
                                  "whole, so choose a folder outside the input data")
    if need_manifest and folder.is_dir() and any(folder.iterdir()) and not (folder / mf.MANIFEST).is_file():
        raise FileExistsError(f"{what} {folder} is not empty and holds no voicefleet dataset "
                              f"({mf.MANIFEST} missing); choose a new or empty folder")


def dataset_complete(out_dir: Path, manifest: dict) -> bool:
    files = manifest.get("files", {})
    return all((out_dir / p).is_file() for p in files.get("data", [])) and (out_dir / REJECTS_FILE).is_file()


def reusable_rows(out_dir: Path, previous: dict | None, processing: str) -> dict:
    """Row keys of the previous version's kept rows and its pipeline rejects, if made the same way."""
    empty = {"kept": set(), "rejects": {}}
    if not previous or previous.get("processing_key") != processing or not dataset_complete(out_dir, previous):
        return empty
    kept = set(read_dataset(out_dir, columns=["row_key"]).column("row_key").to_pylist())
    rejects = {r["row_key"]: r for r in read_rejects(out_dir).to_pylist() if r["reason"] not in DRIVER_REJECTS}
    return {"kept": kept, "rejects": rejects}


def read_reused(out_dir: Path, previous: dict | None, sources: dict[str, str], schema: pa.Schema) -> pa.Table | None:
    """The previous version's rows for the row keys in `sources`, with `source` set to where they are now."""
    if not sources or previous is None:
        return None
    table = read_dataset(out_dir)
    table = table.filter(pc.is_in(table.column("row_key"), value_set=pa.array(sorted(sources), pa.string())))
    fresh = pa.array([sources[k] for k in table.column("row_key").to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index("source"), schema.field("source"), fresh)
    return table.drop_columns(["split"])


def assemble(new: list[pa.Table], reused: pa.Table | None, schema: pa.Schema, val_fraction: float) -> pa.Table:
    """Kept rows (new and reused) with their split, sorted by clip id, in the dataset schema."""
    without_split = [n for n in schema.names if n != "split"]
    tables = [t.select(without_split) for t in new]
    if reused is not None:
        tables.append(reused.select(without_split))
    if not tables:
        return schema.empty_table()
    kept = pa.concat_tables([t.cast(pa.schema([schema.field(n) for n in without_split])) for t in tables])
    splits = assign_splits(zip(kept.column("clip_id").to_pylist(), kept.column("speaker").to_pylist()), val_fraction)
    kept = kept.append_column(schema.field("split"), pa.array([splits[c] for c in kept.column("clip_id").to_pylist()],
                                                              pa.string()))
    kept = kept.sort_by("clip_id").select(schema.names)
    return kept.cast(schema).combine_chunks()


def rejects_table(rejects: list[dict]) -> pa.Table:
    rows = sorted(rejects, key=lambda r: (r["line"], r["clip_id"]))
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def part_names(rows: int) -> list[str]:
    """The data files for `rows` kept clips (one, possibly empty, when there are none)."""
    return [f"{DATA_DIR}/part-{i:05d}.parquet" for i in range(len(range(0, max(rows, 1), ROWS_PER_PART)))]


def write_dataset(out_dir: Path, kept: pa.Table, rejects: pa.Table, manifest: dict) -> None:
    """Write the dataset folder and replace `out_dir` with it in one rename.

    The caller has checked `out_dir` (`check_destination`): it is absent, empty or an earlier dataset.
    """
    with atomic_folder(out_dir, replace=True) as staging:
        (staging / DATA_DIR).mkdir()
        for name, start in zip(manifest["files"]["data"], range(0, max(kept.num_rows, 1), ROWS_PER_PART)):
            pq.write_table(kept.slice(start, ROWS_PER_PART), staging / name, row_group_size=ROW_GROUP_SIZE)
        pq.write_table(rejects, staging / REJECTS_FILE)
        mf.write_manifest(staging, manifest)


def build_manifest(*, listing: ListFile, fingerprint: str, processing: str, config: PrepareConfig, hashes: dict,
                   kept: pa.Table, rejects: pa.Table, processed: int, reused: int, audio_dir: str | None,
                   model_version: str = "v2") -> dict:
    speakers: dict[str, dict] = defaultdict(lambda: {"clips": 0, "train": 0, "val": 0, "seconds": 0.0})
    for speaker, split, seconds in zip(kept.column("speaker").to_pylist(), kept.column("split").to_pylist(),
                                       kept.column("duration_s").to_pylist()):
        s = speakers[speaker]
        s["clips"] += 1
        s["val" if split == VAL else "train"] += 1
        s["seconds"] += float(seconds)
    for s in speakers.values():
        s["seconds"] = round(s["seconds"], 3)
        s["minutes"] = round(s["seconds"] / 60, 3)
    by_reason = Counter(rejects.column("reason").to_pylist())
    splits = Counter(kept.column("split").to_pylist())
    durations = kept.column("duration_s").to_pylist()
    return {
        "format_version": mf.FORMAT_VERSION,
        "dataset_version": fingerprint[:16],
        "fingerprint": fingerprint,
        "processing_key": processing,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {"list": listing.location, "list_sha256": listing.sha256, "rows": len(listing.entries),
                  "audio_dir": audio_dir},
        "counts": {"rows": len(listing.entries), "kept": kept.num_rows, "rejected": rejects.num_rows,
                   "rejected_by_reason": dict(sorted(by_reason.items())), "train": splits.get("train", 0),
                   "val": splits.get("val", 0), "processed": processed, "reused": reused},
        "durations": {"kept_s": round(sum(durations), 3), "kept_minutes": round(sum(durations) / 60, 3),
                      "min_s": round(min(durations), 3) if durations else None,
                      "max_s": round(max(durations), 3) if durations else None},
        "speakers": dict(sorted(speakers.items())),
        "config": config.output_settings(),
        "run": {k: v for k, v in config.model_dump(mode="json").items() if k not in config.output_settings()},
        "pretrained": hashes,
        "libraries": mf.library_versions(),
        "files": {"data": part_names(kept.num_rows), "rejects": REJECTS_FILE},
        "schema": {"audio_dtype": config.audio_dtype, "sample_rate": SAMPLE_RATE, "hubert_frame_rate_hz": 50,
                   "semantic_frame_rate_hz": 25, "sv_embedding": SV_COLUMN in kept.column_names},
        "model_version": model_version,  # of the pretrained folder the features were made with
    }


class Journal:
    """The finished blocks of an unfinished run, kept beside the destination (``.<name>.journal/``).

    ``journal.json`` names the processing key the rows were made with; each block is a pair of
    files, ``kept-<id>.parquet`` (dataset rows without their split) and ``rejects-<id>.parquet``,
    each renamed into place when complete, so a killed run leaves whole blocks or none. A journal
    of another processing key is discarded.
    """

    def __init__(self, out_dir: Path, processing: str, schema: pa.Schema):
        self.folder = out_dir.parent / f".{out_dir.name}.journal"
        self.processing = processing
        self.schema = pa.schema([f for f in schema if f.name != "split"])

    def load(self) -> tuple[pa.Table | None, dict[str, dict]]:
        """The journal's kept rows (one table) and pipeline rejects by row key; nothing when it is
        absent or of another processing key (then it is removed)."""
        meta = self.folder / "journal.json"
        try:
            same = json.loads(meta.read_text()).get("processing_key") == self.processing
        except (OSError, ValueError):
            same = False
        if not same:
            if self.folder.exists():
                logger.info("discarding the journal %s: made with other settings or unreadable", self.folder)
                shutil.rmtree(self.folder, ignore_errors=True)
            return None, {}
        kept, rejects = [], {}
        for path in sorted(self.folder.glob("kept-*.parquet")):
            partner = path.with_name("rejects-" + path.name[len("kept-"):])
            if not partner.is_file():  # killed between the two files of a block: the block is redone
                continue
            kept.append(pq.read_table(path).cast(self.schema))
            rejects.update({r["row_key"]: r for r in pq.read_table(partner).to_pylist()})
        table = pa.concat_tables(kept) if kept else None
        if table is not None or rejects:
            logger.info("journal %s: %d rows already done by an interrupted run", self.folder,
                        (table.num_rows if table is not None else 0) + len(rejects))
        return table, rejects

    def add(self, kept: pa.Table, rejects: list[dict]) -> None:
        """Keep one finished block (its rejects file last: a block counts once both are in place)."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True)
            with atomic_file(self.folder / "journal.json") as tmp:
                tmp.write_text(json.dumps({"processing_key": self.processing}))
        block = uuid.uuid4().hex[:16]
        with atomic_file(self.folder / f"kept-{block}.parquet") as tmp:
            pq.write_table(kept.select(self.schema.names).cast(self.schema), tmp)
        with atomic_file(self.folder / f"rejects-{block}.parquet") as tmp:
            pq.write_table(rejects_table(rejects), tmp)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

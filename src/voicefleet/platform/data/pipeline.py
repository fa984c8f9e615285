"""`prepare_dataset`: a GPT-SoVITS list file -> one validated, versioned Parquet dataset, on Ray Data.

    .venv/bin/voicefleet prepare data/voice.list --pretrained pretrained_models --out datasets/voice

Steps (the driver does the bookkeeping, Ray Data the work):

1. Parse the list (`listfile`), hash every audio file and the pretrained files, compute each row's
   key and the dataset fingerprint (`manifest`). If the destination already holds a dataset with
   the same fingerprint, stop: nothing to do.
2. Reject on the driver what needs no decoding: duplicate rows for one audio file, missing files,
   unsupported languages, empty transcripts.
3. Reuse the rows of the previous dataset whose keys are unchanged (same processing key only), and
   run the others through the Ray Data pipeline (`stages`): CPU tasks decode and check the audio;
   actor pools run the text front end + BERT and HuBERT + the SoVITS quantizer, one model load per
   actor; with a v2Pro/v2ProPlus pretrained folder the HuBERT actors also compute each clip's
   speaker-verification embedding (the `sv_emb` column). The driver consumes the stream, drives
   the progress callback and splits rows into kept and rejected.
4. Assign train/validation (`split`), sort by clip id, and write ``data/part-*.parquet``,
   ``rejects.parquet`` and ``manifest.json`` into a temporary folder beside the destination;
   move it into place only when complete (the previous version is removed after the swap).
   Reading and writing the dataset folder, and finding reusable rows, live in `store`. Each
   finished block is also kept in a journal beside the destination (`store.Journal`): a run that
   was killed and is started again does not compute those rows again.
5. Optionally write the official GPT-SoVITS experiment layout (`official_export`).

The user's files are only read. The destination may not contain any input file, because it is
replaced as a whole. The finished table is assembled in the driver's memory (about 8 MB per
minute of audio with int16 storage): fine for the minutes-to-hours a voice needs; for far larger
corpora the last step would move to ``Dataset.sort().write_parquet()``.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from voicefleet.models.pretrained import PretrainedPaths, find_pretrained
from voicefleet.platform.cluster import ensure_ray

from voicefleet.platform.data import manifest as mf
from voicefleet.platform.data import official_export as export, store, uris
from voicefleet.platform.data.config import PrepareConfig
from voicefleet.platform.data.listfile import ListEntry, read_list_file
from voicefleet.platform.data.quality import RejectReason
from voicefleet.platform.data.schema import dataset_schema

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SpeakerSummary:
    clips: int
    train: int
    val: int
    seconds: float


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` did; `manifest` is the dataset's manifest.json content."""

    out_dir: Path
    dataset_version: str
    no_op: bool  # the destination already held this exact dataset
    processed: int  # rows that went through the Ray pipeline in this run
    reused: int  # rows taken over from the previous version
    kept: int
    rejected: int
    rejects_by_reason: dict[str, int]
    speakers: dict[str, SpeakerSummary]
    manifest: dict = field(repr=False)
    export_dir: Path | None = None

    @classmethod
    def from_manifest(cls, out_dir: Path, manifest: dict, *, no_op: bool, export_dir: Path | None = None
                      ) -> "PrepareResult":
        counts = manifest["counts"]
        speakers = {name: SpeakerSummary(s["clips"], s["train"], s["val"], s["seconds"])
                    for name, s in manifest["speakers"].items()}
        processed = 0 if no_op else counts["processed"]
        reused = counts["rows"] if no_op else counts["reused"]
        return cls(out_dir, manifest["dataset_version"], no_op, processed, reused, counts["kept"],
                   counts["rejected"], dict(counts["rejected_by_reason"]), speakers, manifest, export_dir)


def prepare_dataset(list_path: str | Path, pretrained_dir: str | Path, out_dir: str | Path, *,
                    config: PrepareConfig | None = None, audio_dir: str | None = None,
                    export_official: str | Path | None = None, progress: ProgressFn | None = None,
                    hash_threads: int = 8, version: str | None = None) -> PrepareResult:
    """Prepare a training dataset from a GPT-SoVITS list file (see the module docstring).

    Args:
        list_path: the list file, a local path or a URI pyarrow can read.
        pretrained_dir: the official pretrained folder (HuBERT, BERT, SoVITS generator are used).
        out_dir: local destination folder of the dataset; replaced as a whole when done.
        config: settings (defaults: `PrepareConfig()`).
        audio_dir: resolve audio by file name in this folder instead (official ``inp_wav_dir``).
        export_official: also write the official experiment layout to this local folder.
        progress: called as ``progress(rows_done, rows_total)`` while rows go through the pipeline.
        hash_threads: threads that read and hash the audio files on the driver.
        version: the model version to prepare for when the folder holds several (v2, v2Pro,
            v2ProPlus; default: the folder's first complete one of v2, v2ProPlus, v2Pro). v2Pro and
            v2ProPlus datasets also hold each clip's speaker-verification embedding.
    Raises:
        ListFileError: the list file cannot be read or parsed (names the line).
        PretrainedError: the pretrained folder is incomplete.
        FileExistsError: the destination is a non-dataset folder, or holds input files.
        ValueError: the Ray cluster cannot fit the requested actor pools.
    """
    config = config or PrepareConfig()
    out_dir = Path(out_dir).absolute()
    listing = read_list_file(str(list_path), audio_dir=audio_dir)
    paths = find_pretrained(pretrained_dir, version=version)
    if config.g2pw_model is not None:
        from voicefleet.text.g2pw import check_folder

        check_folder(config.g2pw_model)
    store.check_destination(out_dir, listing.location, listing.entries, "output folder")
    export_dir = Path(export_official).absolute() if export_official is not None else None
    if export_dir is not None:
        store.check_destination(export_dir, listing.location, listing.entries, "export folder", need_manifest=False)
        export.check_export_destination(export_dir)  # before any work, not after the dataset is written
        if export_dir == out_dir or out_dir in export_dir.parents or export_dir in out_dir.parents:
            raise FileExistsError(f"the export folder {export_dir} and the output folder {out_dir} must not "
                                  "contain each other")

    previous = mf.read_manifest(out_dir)
    parts = {"hubert": paths.hubert, "bert": paths.bert, "sovits_g": paths.sovits_g}
    if paths.sv is not None:  # v2Pro/v2ProPlus: the embeddings depend on the sv network too
        parts["sv"] = paths.sv
    hashes = mf.hash_pretrained(parts, previous.get("pretrained") if previous else None)
    processing = mf.processing_key(config.output_settings(), mf.pretrained_digests(hashes))
    shas = _hash_audio(listing.entries, hash_threads)
    keys = [mf.row_key(e.clip_id, e.speaker, e.lang_code, e.text, shas[e.audio]) for e in listing.entries]
    fingerprint = mf.fingerprint(processing, keys)

    if previous and previous.get("fingerprint") == fingerprint and store.dataset_complete(out_dir, previous):
        logger.info("%s already holds dataset %s for this input; nothing to do", out_dir, previous["dataset_version"])
        result = PrepareResult.from_manifest(out_dir, previous, no_op=True, export_dir=export_dir)
        if export_dir is not None:
            export.export_official(out_dir, export_dir)
        return result

    todo, rejects = _pre_reject(listing.entries, keys, shas)
    reusable = store.reusable_rows(out_dir, previous, processing)
    reuse_kept = {r["row_key"] for r in todo if r["row_key"] in reusable["kept"]}
    for row in todo:
        old = reusable["rejects"].get(row["row_key"])
        if old is not None and row["row_key"] not in reuse_kept:
            rejects.append({**old, "line": row["line"], "source": row["source"]})  # the list may have moved
    reused_reject_keys = {r["row_key"] for r in todo if r["row_key"] in reusable["rejects"]}
    run_rows = [r for r in todo if r["row_key"] not in reuse_kept and r["row_key"] not in reused_reject_keys]
    schema = dataset_schema(config.audio_dtype, speaker_embedding=paths.sv is not None)
    # rows an interrupted run of the same processing already finished are taken from its journal
    journal = store.Journal(out_dir, processing, schema)
    journal_kept, journal_rejects = journal.load()
    wanted = {r["row_key"]: r for r in run_rows}
    new_kept: list[pa.Table] = []
    if journal_kept is not None:
        journal_kept = journal_kept.filter(pc.is_in(journal_kept.column("row_key"),
                                                    value_set=pa.array(sorted(wanted), pa.string())))
        sources = pa.array([wanted[k]["source"] for k in journal_kept.column("row_key").to_pylist()], pa.string())
        new_kept.append(journal_kept.set_column(journal_kept.schema.get_field_index("source"), "source", sources))
    from_journal = set(journal_kept.column("row_key").to_pylist()) if journal_kept is not None else set()
    for key, old in journal_rejects.items():
        if key in wanted and key not in from_journal:
            rejects.append({**old, "line": wanted[key]["line"], "source": wanted[key]["source"]})
            from_journal.add(key)
    run_rows = [r for r in run_rows if r["row_key"] not in from_journal]
    logger.info("%d list rows: %d rejected before decoding, %d reused, %d from an interrupted run, %d to process",
                len(listing.entries), len(listing.entries) - len(todo), len(reuse_kept) + len(reused_reject_keys),
                len(from_journal), len(run_rows))

    if run_rows:
        for batch_kept, batch_rejects in _run_pipeline(run_rows, config, paths, progress):
            journal.add(batch_kept, batch_rejects)
            new_kept.append(batch_kept)
            rejects.extend(batch_rejects)
    reused_sources = {r["row_key"]: r["source"] for r in todo if r["row_key"] in reuse_kept}
    kept = store.assemble(new_kept, store.read_reused(out_dir, previous, reused_sources, schema), schema,
                          config.val_fraction)
    rejects_table = store.rejects_table(rejects)
    manifest = store.build_manifest(
        listing=listing, fingerprint=fingerprint, processing=processing, config=config, hashes=hashes, kept=kept,
        rejects=rejects_table, processed=len(run_rows),
        reused=len(reuse_kept) + len(reused_reject_keys) + len(from_journal), audio_dir=audio_dir,
        model_version=paths.version)
    store.write_dataset(out_dir, kept, rejects_table, manifest)
    journal.remove()
    logger.info("dataset %s written to %s: %d kept, %d rejected", manifest["dataset_version"], out_dir,
                kept.num_rows, rejects_table.num_rows)
    if export_dir is not None:
        export.export_official(out_dir, export_dir)
    return PrepareResult.from_manifest(out_dir, manifest, no_op=False, export_dir=export_dir)


# --- driver-side steps ----------------------------------------------------------------------------

def _hash_audio(entries: tuple[ListEntry, ...], threads: int) -> dict[str, str | None]:
    """sha256 of each distinct audio location's bytes (None when the file is missing)."""

    def one(location: str) -> str | None:
        try:
            return uris.sha256_hex(uris.read_bytes(location))
        except FileNotFoundError:
            return None

    locations = sorted({e.audio for e in entries})
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return dict(zip(locations, pool.map(one, locations)))


def _pre_reject(entries: tuple[ListEntry, ...], keys: list[str], shas: dict[str, str | None]
                ) -> tuple[list[dict], list[dict]]:
    """Rows for the pipeline, and the reject rows that need no decoding."""
    todo, rejects, seen = [], [], {}
    for entry, key in zip(entries, keys):
        row = {"clip_id": entry.clip_id, "line": entry.line, "source": entry.audio, "speaker": entry.speaker,
               "lang_code": entry.lang_code, "lang": entry.lang, "text": entry.text, "row_key": key,
               "audio_sha256": shas[entry.audio]}
        reason = None
        if entry.audio in seen:
            reason, detail = RejectReason.DUPLICATE, f"the same audio file as line {seen[entry.audio]}"
        elif shas[entry.audio] is None:
            reason, detail = RejectReason.MISSING_FILE, f"no such file: {entry.audio}"
            if uris.looks_like_windows_path(entry.clip_id):
                detail += " (a Windows path: pass --audio-dir to find the files by name)"
        elif entry.lang is None:
            reason, detail = RejectReason.UNSUPPORTED_LANGUAGE, (f"language {entry.lang_code!r}; voicefleet "
                                                                 "prepares zh (Chinese, English words allowed) and en")
        elif not entry.text.strip():
            reason, detail = RejectReason.EMPTY_TRANSCRIPT, "the text field is empty"
        seen.setdefault(entry.audio, entry.line)
        if reason is None:
            todo.append(row)
        else:
            rejects.append(_reject_row(row, reason.value, detail, None))
    return todo, rejects


def _reject_row(row: dict, reason: str, detail: str, duration: float | None) -> dict:
    return {"clip_id": row["clip_id"], "line": row["line"], "speaker": row["speaker"], "lang_code": row["lang_code"],
            "text": row["text"], "reason": reason, "detail": detail or "", "duration_s": duration,
            "source": row["source"], "audio_sha256": row["audio_sha256"], "row_key": row["row_key"]}


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's own progress bars and stats logs off (the caller shows progress)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.enable_auto_log_stats)
    ctx.enable_progress_bars, ctx.enable_auto_log_stats = False, False
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.enable_auto_log_stats = saved


def _check_resources(config: PrepareConfig) -> None:
    import ray

    total = ray.cluster_resources()
    stages = [("audio", config.audio_stage), ("text", config.text_stage)]
    need_cpu = sum(s.concurrency * s.num_cpus for _, s in stages) + config.cpu_num_cpus
    need_gpu = sum(s.concurrency * s.num_gpus for _, s in stages)
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    pools = ", ".join(f"{name} {s.concurrency} x {s.num_cpus:g} CPU" + (f" + {s.num_gpus:g} GPU" if s.num_gpus else "")
                      for name, s in stages)
    if need_cpu > have_cpu + 1e-9:
        raise ValueError(f"the pipeline needs {need_cpu:g} CPUs ({pools}, plus {config.cpu_num_cpus:g} for CPU tasks) "
                         f"but the Ray cluster has {have_cpu:g}; use fewer workers or fewer CPUs per worker")
    if need_gpu > have_gpu + 1e-9:
        raise ValueError(f"the actor pools need {need_gpu:g} GPUs ({pools}) but the Ray cluster has {have_gpu:g}")


def _run_pipeline(rows: list[dict], config: PrepareConfig, paths: PretrainedPaths, progress: ProgressFn | None
                  ) -> Iterator[tuple[pa.Table, list[dict]]]:
    """Stream rows through the Ray Data stages; yields (kept rows, reject rows) per finished block."""
    import ray
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    from voicefleet.platform.data.stages import AudioFeatureStage, TextStage, decode_and_check, finalize, input_table

    speaker_embedding = paths.sv is not None
    ensure_ray()
    _check_resources(config)
    table = input_table(rows)
    step = config.cpu_batch_size
    cpu = dict(batch_format="pyarrow", batch_size=config.cpu_batch_size, num_cpus=config.cpu_num_cpus,
               compute=TaskPoolStrategy(size=config.cpu_concurrency))
    a, t = config.audio_stage, config.text_stage
    done, total = 0, len(rows)
    if progress:
        progress(0, total)
    with _quiet_ray_data():  # a Dataset copies the context when it is created
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
        ds = ds.map_batches(decode_and_check, fn_kwargs={"settings": config.model_dump(mode="json")}, **cpu)
        ds = ds.map_batches(TextStage, batch_format="pyarrow", batch_size=t.batch_size,
                            compute=ActorPoolStrategy(size=t.concurrency), num_cpus=t.num_cpus, num_gpus=t.num_gpus,
                            fn_constructor_kwargs={"bert_dir": str(paths.bert), "torch_threads": t.torch_threads,
                                                   "num_gpus": t.num_gpus,
                                                   "load_bert": any(r["lang"] == "zh" for r in rows),
                                                   "g2pw_model": (str(Path(config.g2pw_model).absolute())
                                                                  if config.g2pw_model is not None else None)})
        ds = ds.map_batches(AudioFeatureStage, batch_format="pyarrow", batch_size=a.batch_size,
                            compute=ActorPoolStrategy(size=a.concurrency), num_cpus=a.num_cpus, num_gpus=a.num_gpus,
                            fn_constructor_kwargs={"hubert_dir": str(paths.hubert), "sovits_path": str(paths.sovits_g),
                                                   "torch_threads": a.torch_threads, "num_gpus": a.num_gpus,
                                                   "sv_path": str(paths.sv) if speaker_embedding else None,
                                                   "audio_dtype": config.audio_dtype})
        ds = ds.map_batches(finalize, fn_kwargs={"audio_dtype": config.audio_dtype,
                                                 "speaker_embedding": speaker_embedding}, **cpu)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            ok = pc.is_null(batch.column("reason"))
            failed = batch.filter(pc.invert(ok))
            rejects = [_reject_row(r, r["reason"], r["detail"], r["duration_s"])
                       for r in failed.drop_columns([c for c in ("audio_32k", "hubert", "bert", "sv_emb")
                                                      if c in failed.column_names]).to_pylist()]
            done += batch.num_rows
            if progress:
                progress(done, total)
            yield batch.filter(ok), rejects

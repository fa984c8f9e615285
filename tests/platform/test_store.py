"""The prepared dataset folder (`store`): written in one piece, read back as written, never half replaced."""

from __future__ import annotations

import pyarrow as pa
import pytest

from voicefleet.platform.data import manifest as mf
from voicefleet.platform.data import store
from voicefleet.platform.data.schema import dataset_schema


def _rows(n: int, schema: pa.Schema, prefix: str = "clip") -> pa.Table:
    """`n` rows of placeholder values in `schema` (the store does not look inside them)."""
    def value(field: pa.Field, i: int):
        if pa.types.is_string(field.type):
            return f"{prefix}{i:03d}" if field.name == "clip_id" else ("train" if field.name == "split" else "x")
        if pa.types.is_list(field.type):
            return []
        if pa.types.is_binary(field.type):
            return b""
        return 1.0

    return pa.Table.from_pylist([{f.name: value(f, i) for f in schema} for i in range(n)], schema=schema)


def _manifest(kept: pa.Table) -> dict:
    return {"config": {"audio_dtype": "int16"}, "files": {"data": store.part_names(kept.num_rows),
                                                         "rejects": store.REJECTS_FILE}}


def test_dataset_round_trips_across_part_files(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "ROWS_PER_PART", 2)
    kept = _rows(5, dataset_schema("int16"))
    store.write_dataset(tmp_path / "ds", kept, store.rejects_table([]), _manifest(kept))
    assert sorted(p.name for p in (tmp_path / "ds" / store.DATA_DIR).iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert store.read_dataset(tmp_path / "ds").equals(kept)
    assert store.read_dataset(tmp_path / "ds", columns=["clip_id"]).column("clip_id").to_pylist() == \
        kept.column("clip_id").to_pylist()
    assert store.read_rejects(tmp_path / "ds").num_rows == 0
    assert store.dataset_complete(tmp_path / "ds", mf.read_manifest(tmp_path / "ds"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_empty_dataset_has_one_empty_part(tmp_path):
    kept = dataset_schema("int16").empty_table()
    store.write_dataset(tmp_path / "ds", kept, store.rejects_table([]), _manifest(kept))
    assert store.part_names(0) == [f"{store.DATA_DIR}/part-00000.parquet"]
    assert store.read_dataset(tmp_path / "ds").num_rows == 0


def test_a_failed_rewrite_keeps_the_previous_dataset(tmp_path, monkeypatch):
    first = _rows(3, dataset_schema("int16"), prefix="old")
    store.write_dataset(tmp_path / "ds", first, store.rejects_table([]), _manifest(first))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mf, "write_manifest", fail)  # the last file of the new version
    second = _rows(4, dataset_schema("int16"), prefix="new")
    with pytest.raises(OSError, match="disk full"):
        store.write_dataset(tmp_path / "ds", second, store.rejects_table([]), _manifest(second))
    assert store.read_dataset(tmp_path / "ds").equals(first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging folder left


def test_assemble_sorts_by_clip_id_and_assigns_splits():
    schema = dataset_schema("int16")
    rows = _rows(6, schema).drop_columns(["split"])
    shuffled = [rows.take([5, 1, 3]), rows.take([0, 4])]
    kept = store.assemble(shuffled, rows.take([2]), schema, val_fraction=0.5)
    assert kept.schema.equals(schema) and kept.num_rows == 6
    assert kept.column("clip_id").to_pylist() == sorted(rows.column("clip_id").to_pylist())
    assert set(kept.column("split").to_pylist()) <= {"train", "val"}

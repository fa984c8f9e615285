"""Registering a trained voice: the record's lineage must name the dataset by its absolute path."""

from __future__ import annotations

from pathlib import Path

from tests.platform.training.synthetic import write_voice_dataset
from voicefleet.platform.voices import register_trained_voice


def test_lineage_records_the_absolute_dataset_path(tiny_pretrained, tmp_path, monkeypatch):
    dataset = write_voice_dataset(tmp_path / "prepared", n_train=2, n_val=1)
    monkeypatch.chdir(tmp_path)
    record = register_trained_voice("alice", str(tmp_path / "runs"), "prepared", tiny_pretrained.root)
    recorded = Path(record.lineage["dataset"])
    assert recorded.is_absolute() and recorded == dataset.resolve()
    assert record.lineage["reference_clip"].startswith("long")

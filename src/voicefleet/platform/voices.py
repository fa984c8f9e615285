"""Turning training results into registry voices: weights + a reference clip + its transcript."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf

from voicefleet.models.config import SAMPLE_RATE
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.data.schema import clip_arrays
from voicefleet.platform.registry import VoiceRecord, VoiceRegistry

logger = logging.getLogger(__name__)

REFERENCE_RANGE_S = (3.0, 10.0)


def registry_for(storage_path: str) -> VoiceRegistry:
    """The registry that lives beside the runs: `<storage>/registry`."""
    return VoiceRegistry(f"{storage_path.rstrip('/')}/registry")


def pick_reference(dataset: str | Path) -> dict[str, Any]:
    """The clip to use as the voice's reference: 3-10 s, longest under 10 s, preferring validation
    clips (never trained on). Returns its row (audio decoded) or raises when none fits."""
    table = pq.read_table(Path(dataset) / "data", columns=["clip_id", "lang", "text", "duration_s", "split",
                                                           "audio_32k", "hubert_shape", "hubert", "semantic",
                                                           "phone_ids", "bert_shape", "bert"])
    lo, hi = REFERENCE_RANGE_S
    table = table.filter(pc.and_(pc.greater_equal(table["duration_s"], lo), pc.less_equal(table["duration_s"], hi)))
    if table.num_rows == 0:
        raise ValueError(f"no clip of {lo:.0f}-{hi:.0f} s in {dataset} to use as the voice's reference")
    rows = sorted(table.to_pylist(), key=lambda r: (r["split"] != "val", -r["duration_s"], r["clip_id"]))
    row = rows[0]
    row["audio"] = clip_arrays(row).audio
    return row


def register_trained_voice(voice_id: str, storage_path: str, dataset: str | Path, pretrained: str | Path, *,
                           sovits: str | Path | None = None, gpt: str | Path | None = None,
                           metrics: Mapping[str, Any] | None = None, lineage: Mapping[str, Any] | None = None
                           ) -> VoiceRecord:
    """Register (or update) a voice. A stage not given keeps the voice's current weights, or the
    pretrained ones for a new voice."""
    registry = registry_for(storage_path)
    paths = find_pretrained(pretrained)
    dataset = Path(dataset).expanduser().resolve()  # lineage must name the dataset wherever it is read
    current = registry.local_files(voice_id) if registry.exists(voice_id) else {}
    old = registry.get(voice_id) if current else None
    ref = pick_reference(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        # the voice's current files are copied aside first: registering rewrites its folder
        kept = {k: Path(shutil.copy(v, Path(tmp) / f"current-{k}")) for k, v in current.items() if k != "reference"}
        sovits_file = Path(sovits) if sovits else kept.get("sovits", paths.sovits_g)
        gpt_file = Path(gpt) if gpt else kept.get("gpt", paths.gpt)
        wav = Path(tmp) / "reference.wav"
        sf.write(wav, np.clip(ref["audio"], -1, 1), SAMPLE_RATE, subtype="PCM_16")
        record = registry.register(
            voice_id, gpt=gpt_file, sovits=sovits_file, reference=wav, prompt_text=ref["text"],
            prompt_lang=ref["lang"], language=ref["lang"],
            metrics={**(old.metrics if old else {}), **dict(metrics or {})},
            lineage={**(old.lineage if old else {}), **dict(lineage or {}), "dataset": str(dataset),
                     "reference_clip": ref["clip_id"]},
            overwrite=old is not None)
    logger.info("voice %s registered (version %d) with reference clip %s", voice_id, record.version, ref["clip_id"])
    return record

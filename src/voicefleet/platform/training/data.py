"""Training examples from a prepared dataset (`voicefleet prepare`'s Parquet, see `data.schema`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from voicefleet.platform.data.schema import SV_COLUMN, clip_arrays
from voicefleet.platform.data.store import DATA_DIR
from voicefleet.platform.training.batches import Example

COLUMNS = ["clip_id", "split", "audio_32k", "hubert_shape", "hubert", "semantic", "phone_ids", "bert_shape", "bert"]


def load_examples(dataset: str | Path, split: str | None = None) -> list[Example]:
    """All kept clips of a prepared dataset (or one split), sorted by clip id."""
    source = Path(dataset) / DATA_DIR
    if not source.exists():
        raise FileNotFoundError(f"{dataset} is not a prepared dataset (no {DATA_DIR}/ folder); "
                                f"run `voicefleet prepare` first")
    # v2Pro/v2ProPlus datasets also hold each clip's speaker-verification embedding
    columns = COLUMNS + ([SV_COLUMN] if SV_COLUMN in pads.dataset(source, format="parquet").schema.names else [])
    table = pq.read_table(source, columns=columns)
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    out = []
    for row in sorted(table.to_pylist(), key=lambda r: r["clip_id"]):
        a = clip_arrays(row)
        out.append(Example(row["clip_id"], a.audio, a.hubert, a.phone_ids.tolist(), a.semantic.tolist(), a.bert,
                           a.sv))
    return out

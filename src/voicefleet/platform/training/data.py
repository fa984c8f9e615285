"""Reading training examples from a prepared dataset (Parquet) into `Example`s.

Columns used: `clip_id`, `split` ("train" / "val"), `phone_ids` (list<int>), `semantic`
(list<int>), `wav32k` (list<float> or list<int16> scaled by 32768), `hubert` (float16 bytes of a
(768, frames) array, with `hubert_frames`), and for Chinese clips `bert` (float16 bytes of a
(1024, n_phones) array; null otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...models.config import BERT_DIM, SSL_DIM
from .batches import Example

DATA_DIR = "data"  # folder of the prepared dataset holding the kept clips


def _array(value, dtype, rows: int) -> np.ndarray:
    return np.frombuffer(value, dtype=dtype).reshape(rows, -1)


def _wave(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    return arr.astype(np.float32)


def load_examples(dataset: str | Path, split: str | None = None) -> list[Example]:
    """All kept clips of a prepared dataset (or one split), sorted by clip id."""
    dataset = Path(dataset)
    source = dataset / DATA_DIR if (dataset / DATA_DIR).exists() else dataset
    table = pq.read_table(source)
    if split is not None and "split" in table.column_names:
        table = table.filter(pa.compute.equal(table["split"], split))
    rows = table.to_pylist()
    out = []
    for r in sorted(rows, key=lambda r: r["clip_id"]):
        bert = r.get("bert")
        out.append(Example(
            clip_id=r["clip_id"], wav32k=_wave(r["wav32k"]),
            hubert=_array(r["hubert"], np.float16, SSL_DIM),
            phone_ids=list(r["phone_ids"]), semantic=list(r["semantic"]),
            bert=_array(bert, np.float16, BERT_DIM).astype(np.float32) if bert else None))
    return out


def examples_table(examples: Sequence[Example], splits: Sequence[str]) -> pa.Table:
    """The columns `load_examples` reads, for a list of examples (used by tests and tools)."""
    return pa.table({
        "clip_id": [e.clip_id for e in examples],
        "split": list(splits),
        "phone_ids": [list(map(int, e.phone_ids)) for e in examples],
        "semantic": [list(map(int, e.semantic)) for e in examples],
        "wav32k": [np.asarray(e.wav32k, np.float32) for e in examples],
        "hubert": [np.ascontiguousarray(e.hubert, np.float16).tobytes() for e in examples],
        "hubert_frames": [int(np.asarray(e.hubert).shape[1]) for e in examples],
        "bert": [None if e.bert is None else np.ascontiguousarray(e.bert, np.float16).tobytes() for e in examples],
    })

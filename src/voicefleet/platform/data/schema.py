"""The prepared dataset's Parquet schemas, and numpy <-> Arrow helpers for variable-length columns.

Dataset (``<out>/data/part-*.parquet``), one row per kept clip, sorted by `clip_id`:

==================  ======================  =====================================================
column              type                    meaning
==================  ======================  =====================================================
clip_id             string                  the audio path as written in the list file
speaker             string
lang                string                  "zh", "en", "ja", "ko" or "yue"
text                string                  transcript as listed
norm_text           string                  normalised text (official ``norm_text``)
phones              list<string>            v2 phone symbols
phone_ids           list<int32>             ids in the v2 symbol table
word2ph             list<int32>, nullable   phones per character of norm_text; null for en, ja, ko
duration_s          float32                 length of the 32 kHz audio
spectral_entropy    float32                 the noise measure (`quality.spectral_entropy`)
audio_32k           list<int16|float32>     normalised audio, 32 kHz mono (`PrepareConfig.audio_dtype`;
                                            int16 is sample * 32768 as the official 5-wav32k)
hubert_shape        list<int32>             [768, frames]: HuBERT features at 50 Hz
hubert              binary                  float16 little-endian, C order, of hubert_shape
semantic            list<int32>             semantic tokens at 25 Hz (SoVITS quantizer codes)
bert_shape          list<int32>, nullable   [1024, len(phones)] for zh; null for en
bert                binary, nullable        float16 little-endian, C order, of bert_shape
split               string                  "train" or "val"
source              string                  the resolved audio location that was read
audio_sha256        string                  sha256 of the audio file's bytes
row_key             string                  hash of the list row and the audio bytes (incremental runs)
sv_emb              list<float32>           v2Pro/v2ProPlus datasets only: the clip's speaker-verification
                                            embedding (official ``7-sv_cn``), 20480 values
==================  ======================  =====================================================

Rejects (``<out>/rejects.parquet``): one row per list row that is not in the dataset, with
`reason` (a `quality.RejectReason` value) and a human-readable `detail`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from voicefleet.models.config import SAMPLE_RATE

FORMAT_VERSION = 1

_F16 = np.dtype("<f2")
SV_COLUMN = "sv_emb"  # the speaker-verification embedding of v2Pro/v2ProPlus datasets


def dataset_schema(audio_dtype: str = "int16", speaker_embedding: bool = False) -> pa.Schema:
    """The dataset schema; `audio_dtype` is "int16" or "float32". `speaker_embedding` adds the
    `sv_emb` column of datasets prepared with a v2Pro/v2ProPlus pretrained folder (v2 datasets
    do not have it)."""
    if audio_dtype not in ("int16", "float32"):
        raise ValueError(f"audio_dtype must be 'int16' or 'float32', got {audio_dtype!r}")
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("norm_text", pa.string(), nullable=False),
        pa.field("phones", pa.list_(pa.string()), nullable=False),
        pa.field("phone_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("word2ph", pa.list_(pa.int32())),
        pa.field("duration_s", pa.float32(), nullable=False),
        pa.field("spectral_entropy", pa.float32(), nullable=False),
        pa.field("audio_32k", pa.list_(pa.int16() if audio_dtype == "int16" else pa.float32()), nullable=False),
        pa.field("hubert_shape", pa.list_(pa.int32()), nullable=False),
        pa.field("hubert", pa.binary(), nullable=False),
        pa.field("semantic", pa.list_(pa.int32()), nullable=False),
        pa.field("bert_shape", pa.list_(pa.int32())),
        pa.field("bert", pa.binary()),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("audio_sha256", pa.string(), nullable=False),
        pa.field("row_key", pa.string(), nullable=False),
    ]
    if speaker_embedding:
        fields.append(pa.field(SV_COLUMN, pa.list_(pa.float32()), nullable=False))
    metadata = {"voicefleet.format_version": str(FORMAT_VERSION), "sample_rate": str(SAMPLE_RATE),
                "hubert_frame_rate_hz": "50", "semantic_frame_rate_hz": "25", "audio_dtype": audio_dtype}
    return pa.schema(fields, metadata=metadata)


REJECTS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("line", pa.int32(), nullable=False),
    pa.field("speaker", pa.string(), nullable=False),
    pa.field("lang_code", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("duration_s", pa.float32()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("audio_sha256", pa.string()),
    pa.field("row_key", pa.string(), nullable=False),
], metadata={"voicefleet.format_version": str(FORMAT_VERSION)})


# --- float16 blobs ---------------------------------------------------------------------------

def to_f16_blob(array: np.ndarray) -> tuple[list[int], bytes]:
    """(shape, float16 little-endian C-order bytes) of `array`."""
    a = np.ascontiguousarray(np.asarray(array), dtype=_F16)
    return [int(s) for s in a.shape], a.tobytes()


def from_f16_blob(shape: Sequence[int], blob: bytes) -> np.ndarray:
    """The float16 array stored as (shape, bytes); read-only view when possible."""
    return np.frombuffer(blob, dtype=_F16).reshape(tuple(int(s) for s in shape))


@dataclass(frozen=True)
class ClipArrays:
    """One dataset row's arrays, decoded.

    audio: `(samples,)` float32 in [-1, 1] at 32 kHz; hubert: `(768, frames)` float16 at 50 Hz;
    semantic: `(tokens,)` int64 at 25 Hz; bert: `(1024, phones)` float16, or None for en;
    sv: `(sv_dim,)` float32 speaker-verification embedding, None in v2 datasets.
    """

    audio: np.ndarray
    hubert: np.ndarray
    semantic: np.ndarray
    phone_ids: np.ndarray
    bert: np.ndarray | None
    sv: np.ndarray | None = None


def clip_arrays(row: dict) -> ClipArrays:
    """Decode one row (a dict as from ``pyarrow.Table.to_pylist()``) into numpy arrays."""
    audio = np.asarray(row["audio_32k"])
    audio = audio.astype(np.float32) / 32768.0 if audio.dtype.kind == "i" else audio.astype(np.float32)
    bert = from_f16_blob(row["bert_shape"], row["bert"]) if row.get("bert") is not None else None
    sv = np.asarray(row[SV_COLUMN], dtype=np.float32) if row.get(SV_COLUMN) is not None else None
    return ClipArrays(audio, from_f16_blob(row["hubert_shape"], row["hubert"]),
                      np.asarray(row["semantic"], dtype=np.int64), np.asarray(row["phone_ids"], dtype=np.int64), bert,
                      sv)


# --- variable-length numeric columns ----------------------------------------------------------

def list_column(arrays: Iterable[np.ndarray | None], value_type: pa.DataType) -> pa.Array:
    """A list<value_type> column from numpy arrays (None -> null) without per-element Python objects."""
    arrays = list(arrays)
    np_type = value_type.to_pandas_dtype()
    lengths = [0 if a is None else len(a) for a in arrays]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    parts = [np.asarray(a, dtype=np_type).ravel() for a in arrays if a is not None]
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np_type)
    mask = pa.array([a is None for a in arrays], type=pa.bool_()) if any(a is None for a in arrays) else None
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type), mask=mask)


def list_values(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray | None]:
    """Each row of a list<numeric> column as a numpy array (None for null rows)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[np.ndarray | None] = []
    for chunk in chunks:
        if isinstance(chunk, pa.LargeListArray):
            chunk = chunk.cast(pa.list_(chunk.type.value_type))
        values = chunk.values.to_numpy(zero_copy_only=False)
        offsets = chunk.offsets.to_numpy()
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        for i in range(len(chunk)):
            out.append(values[offsets[i]:offsets[i + 1]] if valid[i] else None)
    return out

"""The official GPT-SoVITS experiment layout, written from a prepared dataset.

GPT-SoVITS's own trainers (``s1_train.py``, ``s2_train.py``) read an experiment folder that its
``prepare_datasets`` scripts fill; this writes the same files from our dataset:

* ``2-name2text.txt``: ``name\\tphones\\tword2ph\\tnorm_text`` per clip, phones space-separated, word2ph
  as Python prints a list (``None`` for English), as ``1-get-text.py`` writes it.
* ``3-bert/<name>.pt``: BERT features, a ``(1024, phones)`` tensor, Chinese clips only (the s1
  trainer uses zeros where the file is missing, as for English).
* ``4-cnhubert/<name>.pt``: HuBERT features, a ``(1, 768, frames)`` tensor (``2-get-hubert-wav32k.py``).
* ``5-wav32k/<name>``: the normalised 32 kHz audio as 16-bit mono WAV.
* ``7-sv_cn/<name>.pt``: v2Pro/v2ProPlus datasets only: the speaker-verification embedding, a
  ``(1, 20480)`` float32 tensor (``2-get-sv.py``), which the v2Pro ``s2_train.py`` reads per clip.
* ``6-name2semantic.tsv``: the header ``item_name\\tsemantic_audio`` (the WebUI adds it when it merges
  the per-GPU parts) and ``name\\ttokens`` per clip, tokens space-separated.

Tensors are float16, which is what the official scripts save on a GPU (``is_half``, the default
there; on a CPU they save float32); both trainers accept either. `name` is the audio file's name,
as the official scripts use it (``os.path.basename``), so it keeps its extension; when two clips
share a file name, their full clip ids (with "/" replaced by "__") are used for all of them instead.
All clips are exported, train and validation alike: the official trainers have no validation split.

The folder is written beside its destination and moved into place when complete; a marker file
records the dataset version, so exporting the same version again does nothing.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile
import torch

from voicefleet.models.checkpoint.files import atomic_folder
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.data.manifest import read_manifest
from voicefleet.platform.data.schema import SV_COLUMN, from_f16_blob
from voicefleet.platform.data.store import read_dataset
from voicefleet.platform.data.uris import basename

logger = logging.getLogger(__name__)

MARKER = "voicefleet-export.json"


def official_names(clip_ids: list[str]) -> dict[str, str]:
    """clip id -> the official item name (the file name; the whole id where file names collide)."""
    names = {c: basename(c) for c in clip_ids}
    counts = Counter(names.values())
    return {c: (n if counts[n] == 1 else c.replace("\\", "/").lstrip("./").replace("/", "__")) for c, n in names.items()}


def check_export_destination(export_dir: str | Path) -> None:
    """Refuse a destination that is a file or a non-empty folder other than an earlier export."""
    export_dir = Path(export_dir)
    if export_dir.exists() and (not export_dir.is_dir() or
                                (any(export_dir.iterdir()) and not (export_dir / MARKER).is_file())):
        raise FileExistsError(f"export folder {export_dir} is not empty and is not a voicefleet export; "
                              "choose a new or empty folder")


def export_official(dataset_dir: str | Path, export_dir: str | Path) -> Path:
    """Write the official experiment layout for the dataset in `dataset_dir` to `export_dir`."""
    dataset_dir, export_dir = Path(dataset_dir), Path(export_dir).absolute()
    manifest = read_manifest(dataset_dir)
    if manifest is None:
        raise FileNotFoundError(f"{dataset_dir} is not a prepared dataset (no manifest.json)")
    version = manifest["dataset_version"]
    marker = export_dir / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("dataset_version") == version:
                logger.info("%s already holds the export of dataset %s", export_dir, version)
                return export_dir
        except (OSError, json.JSONDecodeError):
            pass
    check_export_destination(export_dir)

    table = read_dataset(dataset_dir)
    names = official_names(table.column("clip_id").to_pylist())
    # replace: the destination is absent, empty or an earlier export (checked above)
    with atomic_folder(export_dir, replace=True) as staging:
        with_sv = SV_COLUMN in table.column_names
        for sub in ("3-bert", "4-cnhubert", "5-wav32k") + (("7-sv_cn",) if with_sv else ()):
            (staging / sub).mkdir()
        text_lines, semantic_lines = [], ["item_name\tsemantic_audio"]
        for batch in table.to_batches(max_chunksize=16):
            for row in batch.to_pylist():
                name = names[row["clip_id"]]
                word2ph = row["word2ph"] if row["word2ph"] is not None else None
                text_lines.append(f"{name}\t{' '.join(row['phones'])}\t{word2ph}\t{row['norm_text']}")
                semantic_lines.append(f"{name}\t{' '.join(str(t) for t in row['semantic'])}")
                hubert = torch.from_numpy(from_f16_blob(row["hubert_shape"], row["hubert"]).copy())[None]
                torch.save(hubert, staging / "4-cnhubert" / f"{name}.pt")
                if row["bert"] is not None:
                    bert = torch.from_numpy(from_f16_blob(row["bert_shape"], row["bert"]).copy())
                    torch.save(bert, staging / "3-bert" / f"{name}.pt")
                if with_sv:
                    sv = torch.tensor(row[SV_COLUMN], dtype=torch.float32)[None]
                    torch.save(sv, staging / "7-sv_cn" / f"{name}.pt")
                audio = np.asarray(row["audio_32k"])
                if audio.dtype.kind == "f":
                    audio = np.clip(np.round(audio * 32768.0), -32768, 32767)
                soundfile.write(staging / "5-wav32k" / name, audio.astype(np.int16), SAMPLE_RATE, format="WAV",
                                subtype="PCM_16")
        (staging / "2-name2text.txt").write_text("\n".join(text_lines) + "\n", encoding="utf-8")
        (staging / "6-name2semantic.tsv").write_text("\n".join(semantic_lines) + "\n", encoding="utf-8")
        (staging / MARKER).write_text(json.dumps({"dataset_version": version, "dataset": str(dataset_dir),
                                                  "clips": table.num_rows}, indent=2) + "\n", encoding="utf-8")
    logger.info("exported %d clips in the official layout to %s", table.num_rows, export_dir)
    return export_dir

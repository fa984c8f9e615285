"""``manifest.json``: what a prepared dataset holds and exactly what it was made from.

Fingerprints (all sha256, hex):

* `row_key` of a list row: its clip id, speaker, language code and text, and the sha256 of the
  audio file's bytes ("missing" when there is no file). Moving the data folder changes nothing;
  editing a transcript or replacing an audio file changes that row only.
* `processing_key`: the settings that change results (`PrepareConfig.output_settings`), the
  sha256 of every pretrained file used (HuBERT folder, BERT folder, SoVITS generator), the dataset
  format version and the voicefleet version. Rows are reused from an earlier run only under the
  same processing key.
* `fingerprint`: the processing key and the sorted row keys. Equal fingerprints mean the same
  dataset: a re-run is then a no-op. `dataset_version` is its first 16 characters.

Hashing a full-size pretrained folder reads about 2 GB; the manifest records each file's size and
modification time, and a later run reuses the recorded hash when both are unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Iterable, Mapping

from voicefleet import __version__
from voicefleet.models.checkpoint.files import atomic_file
from voicefleet.platform.data.schema import FORMAT_VERSION

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_CHUNK = 1 << 20
LIBRARIES = ("torch", "transformers", "ray", "pyarrow", "numpy", "soxr", "soundfile", "pypinyin", "jieba",
             "g2p_en", "pydantic")


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def row_key(clip_id: str, speaker: str, lang_code: str, text: str, audio_sha256: str | None) -> str:
    return _sha256_json([clip_id, speaker, lang_code, text, audio_sha256 or "missing"])


def processing_key(output_settings: Mapping, pretrained_hashes: Mapping[str, Mapping[str, str]]) -> str:
    return _sha256_json({"settings": dict(output_settings), "pretrained": pretrained_hashes,
                         "format_version": FORMAT_VERSION, "voicefleet": __version__})


def fingerprint(processing: str, row_keys: Iterable[str]) -> str:
    return _sha256_json([processing, sorted(row_keys)])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_pretrained(parts: Mapping[str, Path], previous: Mapping | None = None) -> dict[str, dict[str, dict]]:
    """sha256, size and mtime of every file of each part (a file or a folder, walked in sorted order).

    `previous` is an earlier manifest's "pretrained" entry: a file with the same part, relative path,
    size and mtime keeps its recorded hash without being read again.
    """
    previous = previous or {}
    out: dict[str, dict[str, dict]] = {}
    for part, root in parts.items():
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        entries = {}
        for path in files:
            rel = path.name if not root.is_dir() else path.relative_to(root).as_posix()
            stat = path.stat()
            old = previous.get(part, {}).get("files", {}).get(rel)
            if old and old.get("size") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns:
                sha = old["sha256"]
            else:
                sha = file_sha256(path)
            entries[rel] = {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        out[part] = {"path": str(root), "files": entries}
    return out


def pretrained_digests(hashes: Mapping[str, Mapping]) -> dict[str, dict[str, str]]:
    """Only the content hashes (what the processing key depends on), per part and file."""
    return {part: {rel: e["sha256"] for rel, e in info["files"].items()} for part, info in hashes.items()}


def library_versions() -> dict[str, str]:
    versions = {"voicefleet": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a dataset folder, or None when there is none (or it is unreadable)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("ignoring unreadable manifest %s: %s", path, e)
        return None


def write_manifest(folder: Path, manifest: Mapping) -> Path:
    path = Path(folder) / MANIFEST
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    return path

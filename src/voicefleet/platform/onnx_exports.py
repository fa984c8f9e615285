"""A registered voice's ONNX export, kept in the registry beside its files: where it lives, what it
was exported from, and whether it still is the voice as registered now.

    voicefleet export onnx alice --storage runs --pretrained pretrained_models   # -> <registry>/voices/alice/onnx/

The export's manifest (`voicefleet.inference.onnx_engine`) records, under `voice.registry`, the
registry version of the voice, when that version was registered and the SHA-256 of its GPT,
SoVITS and reference files (`export_stamp`). A voice registered again after its export (a new
version, or deleted and registered anew) no longer matches it (`stale_reason`), and the ONNX
serving replicas (`voicefleet.serve.onnx_synthesizer`) answer such a voice, one with no export,
a damaged export, or a kind of voice the graphs do not cover, with `VoiceNotExported` (409
`voice_not_exported`), whose message says what to run. Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from voicefleet.inference.onnx_engine import MANIFEST_FILE, ONNX_MODEL_VERSIONS, OnnxFolderError, file_sha256
from voicefleet.platform.registry import RegistryError, VoiceRecord, VoiceRegistry

ONNX_FOLDER = "onnx"  # inside the voice's registry folder


class VoiceNotExported(RegistryError):
    """A voice the ONNX engine cannot serve as registered: no export, a stale or damaged one, or a
    kind of voice the graphs do not cover.

    `str()` gives the command with this server's storage and pretrained folders (for the server
    log and operators); `client_message` the same command with placeholders for them, as every
    client message leaves the registry's location out."""

    def __init__(self, voice_id: str, problem: str, fix: str, client_fix: str | None = None):
        self.voice_id, self.problem, self.fix = voice_id, problem, fix
        self.client_fix = fix if client_fix is None else client_fix
        super().__init__(f"{problem}; {fix}")

    @property
    def client_message(self) -> str:
        return " ".join(f"{self.problem}; {self.client_fix}".split())

    def __reduce__(self):  # `args` holds the message; Ray pickles exceptions across processes
        return type(self), (self.voice_id, self.problem, self.fix, self.client_fix), self.__dict__


def export_command(voice_id: str, storage: str = "STORAGE", pretrained: str = "PRETRAINED", *,
                   overwrite: bool = False) -> str:
    """The command that exports a registered voice into the registry (STORAGE and PRETRAINED: placeholders)."""
    return (f"voicefleet export onnx {voice_id} --storage {storage} --pretrained {pretrained}"
            f"{' --overwrite' if overwrite else ''}")


def not_exported(voice_id: str, problem: str, storage: str, pretrained: str, *, overwrite: bool) -> VoiceNotExported:
    """`VoiceNotExported` whose fix is running the export (again, with `overwrite`)."""
    run = "export it again" if overwrite else "export it into the registry"
    return VoiceNotExported(
        voice_id, problem, f"{run}: {export_command(voice_id, storage, pretrained, overwrite=overwrite)}",
        f"{run}: {export_command(voice_id, overwrite=overwrite)} (STORAGE and PRETRAINED: this server's storage "
        f"and pretrained folders)")


def export_stamp(record: VoiceRecord, files: Mapping[str, Path]) -> dict[str, Any]:
    """What an export records of the registered voice it was made from (`files`: its local files)."""
    return {"version": record.version, "created_at": record.created_at,
            "sha256": {kind: file_sha256(path) for kind, path in sorted(files.items())}}


def stale_reason(manifest: Mapping[str, Any], record: VoiceRecord, files: Mapping[str, Path]) -> str | None:
    """Why an export's manifest does not describe the voice as registered now, or None when it does.

    Registry version and registration time first (a voice deleted and registered anew starts at
    version 1 again), then the files' SHA-256 (a record or file replaced behind the registry)."""
    voice = manifest.get("voice") or {}
    stamp = voice.get("registry")
    if voice.get("id") != record.voice_id:
        return f"it holds voice {voice.get('id')!r}, not {record.voice_id!r}"
    if not isinstance(stamp, dict) or not isinstance(stamp.get("sha256"), dict):
        return "it records no registry version (written with -o, or by an older voicefleet)"
    if (stamp.get("version"), stamp.get("created_at")) != (record.version, record.created_at):
        return (f"it was made from version {stamp.get('version')} (registered {stamp.get('created_at')}); the voice "
                f"is version {record.version} (registered {record.created_at}) now")
    changed = [kind for kind, path in sorted(files.items()) if stamp["sha256"].get(kind) != file_sha256(path)]
    if changed:
        return f"the voice's {' and '.join(changed)} file{'s' if len(changed) > 1 else ''} changed since"
    return None


def served_export(registry: VoiceRegistry, record: VoiceRecord, files: Mapping[str, Path], *, storage: str,
                  pretrained: str) -> Path:
    """The local folder of the voice's export when it is the voice as registered now; otherwise
    `VoiceNotExported` saying what to run (`storage`, `pretrained`: this server's, for the log).

    The graph files themselves are checked against the manifest when the engine opens the folder
    (`damaged_export` turns its `OnnxFolderError` into the same answer)."""
    voice_id = record.voice_id
    if record.model_version is not None and record.model_version not in ONNX_MODEL_VERSIONS:
        raise VoiceNotExported(voice_id, f"voice {voice_id!r} is a {record.model_version} voice, which the ONNX "
                                         f"engine does not serve ({', '.join(ONNX_MODEL_VERSIONS)} voices only)",
                               "serve it from a deployment on the torch engine: voicefleet serve --engine torch")
    folder = registry.local_folder(voice_id, ONNX_FOLDER)
    if folder is None:
        raise not_exported(voice_id, f"voice {voice_id!r} (version {record.version}) has no ONNX export", storage,
                           pretrained, overwrite=False)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise damaged_export(voice_id, folder, OnnxFolderError(f"{MANIFEST_FILE} cannot be read: {e}"), storage,
                             pretrained) from None
    reason = stale_reason(manifest, record, files)
    if reason is not None:
        raise not_exported(voice_id, f"the ONNX export of voice {voice_id!r} is stale: {reason}", storage, pretrained,
                           overwrite=True)
    return folder


def damaged_export(voice_id: str, folder: Path, error: OnnxFolderError, storage: str,
                   pretrained: str) -> VoiceNotExported:
    """The answer for an export whose folder fails its checks (a graph changed, missing, unloadable)."""
    what = " ".join(str(error).replace(f"{folder}/", "").replace(f"{folder}: ", "").replace(str(folder), "").split())
    return not_exported(voice_id, f"the ONNX export of voice {voice_id!r} is damaged ({what})", storage, pretrained,
                        overwrite=True)

"""A voice's ONNX export in the registry: the stamp its manifest carries, when it is stale, and what
the ONNX replicas answer for a voice they cannot serve (no graphs needed: the manifest alone decides
staleness; the graphs are checked when the engine opens them, tests/serve/test_onnx_serving.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.platform.test_registry import _register, voice_files  # noqa: F401 - a fixture
from voicefleet.platform.onnx_exports import (ONNX_FOLDER, VoiceNotExported, export_stamp, served_export,
                                              stale_reason)
from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.errors import client_error

STORAGE, PRETRAINED = "/srv/private/runs", "/srv/private/pretrained_models"


def _export(reg: VoiceRegistry, voice_id: str, manifest: dict) -> Path:
    """A stand-in export folder holding only its manifest (all `served_export` reads)."""
    folder = reg.local_dir(voice_id) / ONNX_FOLDER
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _manifest(reg: VoiceRegistry, voice_id: str) -> dict:
    record, files = reg.get(voice_id), reg.local_files(voice_id)
    return {"voice": {"id": voice_id, "registry": export_stamp(record, files)}}


def _refusal(reg: VoiceRegistry, voice_id: str) -> VoiceNotExported:
    with pytest.raises(VoiceNotExported) as raised:
        served_export(reg, reg.get(voice_id), reg.local_files(voice_id), storage=STORAGE, pretrained=PRETRAINED)
    return raised.value


def test_an_export_is_current_until_the_voice_is_registered_again(tmp_path, voice_files):  # noqa: F811
    reg = VoiceRegistry(tmp_path / "registry")
    _register(reg, "alice", voice_files)
    manifest = _manifest(reg, "alice")
    assert manifest["voice"]["registry"]["version"] == 1
    assert stale_reason(manifest, reg.get("alice"), reg.local_files("alice")) is None

    _register(reg, "alice", voice_files, overwrite=True)  # the same files, a new version
    reason = stale_reason(manifest, reg.get("alice"), reg.local_files("alice"))
    assert "made from version 1" in reason and "version 2" in reason

    reg.delete("alice")  # deleted and registered anew: version 1 again, at another time
    record = _register(reg, "alice", voice_files)
    record.created_at = "2000-01-01T00:00:00+00:00"
    assert "registered 2000-01-01" in stale_reason(manifest, record, reg.local_files("alice"))


def test_files_changed_behind_the_registry_or_another_voice_make_an_export_stale(tmp_path, voice_files):  # noqa: F811
    reg = VoiceRegistry(tmp_path / "registry")
    _register(reg, "alice", voice_files)
    manifest, record, files = _manifest(reg, "alice"), reg.get("alice"), reg.local_files("alice")
    files["sovits"].write_bytes(b"other weights")
    assert stale_reason(manifest, record, files) == "the voice's sovits file changed since"
    assert stale_reason({"voice": {**manifest["voice"], "id": "bob"}}, record, files) == "it holds voice 'bob', not 'alice'"
    assert "records no registry version" in stale_reason({"voice": {"id": "alice", "version": 1}}, record, files)


def test_what_an_onnx_replica_answers_for_each_voice_it_cannot_serve(tmp_path, voice_files):  # noqa: F811
    reg = VoiceRegistry(tmp_path / "registry")
    _register(reg, "alice", voice_files)
    missing = _refusal(reg, "alice")
    assert "voice 'alice' (version 1) has no ONNX export" in str(missing)
    # the server log has the exact command; a client the same with placeholders, never the folders
    assert f"voicefleet export onnx alice --storage {STORAGE} --pretrained {PRETRAINED}" in str(missing)
    assert "voicefleet export onnx alice --storage STORAGE --pretrained PRETRAINED (" in missing.client_message
    failed = client_error(missing)
    assert (failed.status, failed.type) == (409, "voice_not_exported") and "/srv/private" not in failed.message
    assert client_error(pickle.loads(pickle.dumps(missing))).message == failed.message  # across Ray

    folder = _export(reg, "alice", _manifest(reg, "alice"))
    assert served_export(reg, reg.get("alice"), reg.local_files("alice"), storage=STORAGE,
                         pretrained=PRETRAINED) == folder
    _register(reg, "alice", voice_files, overwrite=True)  # the export stays beside the new version's files
    assert (folder / "manifest.json").is_file()
    stale = _refusal(reg, "alice")
    assert "export of voice 'alice' is stale" in str(stale) and str(stale).endswith(" --overwrite")

    (folder / "manifest.json").write_text("{not json")
    damaged = client_error(_refusal(reg, "alice"))
    assert "export of voice 'alice' is damaged (manifest.json cannot be read" in damaged.message
    assert str(folder) not in damaged.message and damaged.message.endswith("--overwrite (STORAGE and PRETRAINED: "
                                                                           "this server's storage and pretrained "
                                                                           "folders)")

    pro = reg.get("alice")
    pro.model_version = "v2ProPlus"
    with pytest.raises(VoiceNotExported, match="v2ProPlus voice, which the ONNX engine does not serve.*--engine torch"):
        served_export(reg, pro, reg.local_files("alice"), storage=STORAGE, pretrained=PRETRAINED)


def test_exports_are_copied_to_and_from_a_registry_on_object_storage(tmp_path, voice_files):  # noqa: F811
    reg = VoiceRegistry(tmp_path / "unused")
    reg.fs, reg.root, reg.uri = pafs._MockFileSystem(), "bucket/voicefleet", "mock://bucket/voicefleet"
    _register(reg, "erin", voice_files)
    assert reg.local_dir("erin") is None and not reg.has_folder("erin", ONNX_FOLDER)
    assert reg.local_folder("erin", ONNX_FOLDER) is None
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "manifest.json").write_text(json.dumps(_manifest(reg, "erin")))
    reg.store_folder("erin", ONNX_FOLDER, staged)
    (staged / "manifest.json").write_text("replaced")
    (staged / "graph.onnx").write_bytes(b"graph")
    reg.store_folder("erin", ONNX_FOLDER, staged)  # replaces the folder there
    local = reg.local_folder("erin", ONNX_FOLDER, tmp_path / "cache")
    assert sorted(p.name for p in local.iterdir()) == ["graph.onnx", "manifest.json"]
    assert (local / "manifest.json").read_text() == "replaced" and str(local).startswith(str(tmp_path / "cache"))
    reg.delete("erin")
    assert not reg.has_folder("erin", ONNX_FOLDER)

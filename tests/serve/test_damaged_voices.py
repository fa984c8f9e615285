"""Faults on the server's disk: a voice whose files are damaged answers a clear error and every other
voice keeps working; an upload that meets a full disk answers 507 and leaves no half-written voice.

The replica here is `VoiceSynthesizer`'s own class, built in this process (no Serve), behind the
app's ingress served in-process: the same code paths as a deployment, without starting Ray.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from unittest import mock

import pytest

from tests.serve.test_errors import TEXT, LocalHandle, _clip, _tts, _upload
from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.errors import RequestFailed


class ReplicaHandle(LocalHandle):
    """A handle whose voices are loaded by the replica class's own loader (each request loads anew)."""

    def __init__(self, settings, replica):
        super().__init__(settings)
        self.replica = replica

    def _voice(self):
        return self.replica._load_voice(self.key)


@pytest.fixture(scope="module")
def replica(serve_settings):
    from voicefleet.serve.synthesizer import VoiceSynthesizer

    replica = VoiceSynthesizer.func_or_class(serve_settings)
    yield replica
    replica.pool.shutdown()


@pytest.fixture(scope="module")
def client(serve_settings, replica):
    pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx (pip install httpx==0.28.1)")
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    with TestClient(create_app(serve_settings, ReplicaHandle(serve_settings, replica))) as client:
        yield client


@pytest.fixture
def registry(serve_settings):
    return VoiceRegistry(serve_settings.registry_root)


@pytest.fixture
def broken(registry):
    """A copy of voice alpha named `broken`, removed after the test (whatever state it is in)."""
    registry.register("broken", **registry.local_files("alpha"), prompt_text=TEXT, prompt_lang="zh")
    yield Path(registry.root) / "voices" / "broken"
    shutil.rmtree(Path(registry.root) / "voices" / "broken", ignore_errors=True)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[: min(len(data), 4096)] = bytes(range(256)) * (min(len(data), 4096) // 256) + bytes(min(len(data), 4096) % 256)
    path.write_bytes(bytes(data))


DAMAGE = {
    "gpt weights truncated": ("gpt.ckpt", _truncate),
    "sovits weights overwritten": ("sovits.pth", _garble),
    "reference clip garbled": ("reference.wav", lambda p: p.write_bytes(b"RIFF" + bytes(500))),
    "gpt weights deleted": ("gpt.ckpt", lambda p: p.unlink()),
    "record damaged": ("voice.json", lambda p: p.write_text('{"voice_id": "broken", "prompt')),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_voice_answers_its_error_and_the_others_keep_working(client, replica, broken, damage):
    name, spoil = DAMAGE[damage]
    spoil(broken / name)
    response = _tts(client, voice="broken")
    assert response.status_code == 500, response.text
    assert response.json() == {"error": {"type": "voice_damaged", "message": (
        "voice 'broken' is damaged on the server and cannot be used; delete it and register it again")}}
    for voice in ("alpha", "beta"):  # the other voices, before and after the failed load, still synthesise
        ok = _tts(client, voice=voice)
        assert ok.status_code == 200 and ok.content[:4] == b"RIFF", ok.text
    assert _tts(client, voice="broken").status_code == 500  # the same answer again, not a crash
    listed = [v["voice_id"] for v in client.get("/v1/voices").json()["voices"]]
    assert {"alpha", "beta", "gamma"} <= set(listed)
    assert ("broken" in listed) == (name != "voice.json")  # an unreadable record is left out of the list
    assert client.delete("/v1/voices/broken").status_code == 204  # as the message says, it can be deleted
    assert _tts(client, voice="broken").status_code == 404


def test_the_replica_loader_says_which_voice_is_damaged(replica, broken):
    _truncate(broken / "sovits.pth")
    with pytest.raises(RequestFailed) as raised:
        replica._load_voice("broken@1")
    assert (raised.value.status, raised.value.type) == (500, "voice_damaged")
    assert str(broken.parent) not in raised.value.message  # never the registry's location
    assert replica._load_voice("gamma@1") is not None


def test_an_upload_on_a_full_disk_answers_507_and_registers_nothing(client, registry):
    before = sorted(p.name for p in (Path(registry.root) / "voices").iterdir())
    real_copy = __import__("pyarrow.fs", fromlist=["copy_files"]).copy_files

    def copy_until_full(source, destination, **kw):
        if destination.endswith("reference.wav"):  # the weights went in; the disk fills on the last file
            Path(destination).write_bytes(b"RIFF")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, destination, **kw)

    with mock.patch("voicefleet.platform.registry.pafs.copy_files", copy_until_full):
        response = _upload(client, "upload-full", _clip(4.0))
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["type"] == "insufficient_storage" and "upload-full" in error["message"]
    assert "no space left" in error["message"] and "\n" not in error["message"]
    assert sorted(p.name for p in (Path(registry.root) / "voices").iterdir()) == before  # no half-written voice
    assert "upload-full" not in [v["voice_id"] for v in client.get("/v1/voices").json()["voices"]]
    # with room again, the same upload goes through: nothing left behind blocks it
    again = _upload(client, "upload-full", _clip(4.0))
    try:
        assert again.status_code == 201, again.text
        assert _tts(client, voice="upload-full").status_code == 200
    finally:
        registry.delete("upload-full")
